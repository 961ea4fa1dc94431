"""Synthetic whole-body FDG-PET/CT phantoms with known lesion labels.

Why: the real autoPET data (1014 studies, ~400 GB) is not available everywhere the pipeline has to
be built and tested, and a CPU-only machine cannot train on it anyway. These phantoms are cheap,
deterministic per seed and vary widely (body size, organ uptake, hot physiological structures,
lesions, blur, noise), so code paths, geometry handling and small training runs can be exercised
end to end. They are NOT a substitute for real data; see docs/phantoms.md.

All anatomy is defined in patient physical coordinates (ITK's LPS, mm: +x = patient left,
+y = posterior, +z = superior). It is rendered on an axis-aligned grid and then re-indexed
(flips/permutations, exact) or resampled (oblique directions) onto the requested grid, so the
same seed puts every structure at the same physical place whatever the image grid.

How a phantom is made (one module per stage):
    sampling.py   seed -> Patient and Lesions (params.py), drawn in a fixed order
    anatomy.py    organ layout scaled to the patient, body-relative -> physical coordinates
    grid.py       requested image grid -> axis-aligned render grid, and back to images
    render.py     the painting steps in order (body.py, organs.py, lesions.py on canvas.py)
    scanner.py    PSF blur, PET and CT noise
    phantom.py    make_phantom, tying the above together
    cli.py        python -m training.phantoms: datasets in the layouts of training/layouts.py
"""

from .cli import main, parse_seeds
from .geometry import centred_origin
from .grid import AUTOPET_INPLANE, AUTOPET_SPACING
from .phantom import Phantom, make_phantom

__all__ = [
    "AUTOPET_INPLANE",
    "AUTOPET_SPACING",
    "Phantom",
    "centred_origin",
    "main",
    "make_phantom",
    "parse_seeds",
]
