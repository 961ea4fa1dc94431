"""Writing files so that nothing half-written is left: a temp file beside the target, then a rename.

A killed run (SIGKILL, power, a full disk) leaves the old file or the new one, never a partial one,
and the hidden temp names are ones ``remove_stale_temps`` clears on the next run.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from .errors import InputError, OutputError
from .images import IMAGE_IOS, image_reader, image_stem, image_suffix, itk_message

#: Hidden temp entries this module leaves behind only when a run is killed hard (SIGKILL, power).
_TEMP_NAME = re.compile(r"^\..+\.tmp(\.[A-Za-z.]+)?$|^\.write-test\..+$")

def write_failure(path: Path, reason: str) -> OutputError:
    """The one line for a failed write: the file, why, and the free space where it was going."""
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2 ** 20:.0f} MB free on {path.parent}"
    except OSError:
        free = f"free space of {path.parent} unknown"
    return OutputError(f"{path}: not written ({reason}; {free})")

def _os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__

def check_writable(folder: Path) -> None:
    """Fail before any compute when the output folder cannot take files."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"{folder}: output folder is not writable ({exc.strerror or exc})") from None

def write_image_atomic(image: sitk.Image, path: Path, compress: bool = True) -> None:
    """Write into a hidden temp folder beside ``path``, then rename: a killed run leaves no partial mask.

    The temp name has a lower-case suffix so that ITK picks the writer "A.MHA" asks for; a .mhd
    header's data file is moved in before the header, so a header never names a missing file.
    """
    suffix = image_suffix(path) or path.suffix.lower()
    try:
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as exc:
        raise write_failure(path, _os_reason(exc)) from None
    try:
        tmp = tmp_dir / f"{image_stem(path)}{suffix}"
        writer = sitk.ImageFileWriter()
        writer.SetFileName(str(tmp))
        if suffix in IMAGE_IOS:
            writer.SetImageIO(IMAGE_IOS[suffix])
        writer.SetUseCompression(compress)
        try:
            writer.Execute(image)
        except RuntimeError as exc:
            reason = "no space left on device" if "No space left" in str(exc) else itk_message(exc)
            raise write_failure(path, reason) from None
        _check_written(tmp, image, path)
        for extra in sorted(tmp_dir.iterdir()):
            if extra != tmp:
                os.chmod(extra, 0o644)
                os.replace(extra, path.parent / extra.name)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        raise write_failure(path, _os_reason(exc)) from None
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)

def _check_written(tmp: Path, image: sitk.Image, path: Path) -> None:
    """Read the written file back: ITK's NIfTI writer reports a full disk only on stderr and leaves an
    empty or cut file, which must never be renamed into place as a finished output."""
    try:
        back = image_reader(tmp).Execute()  # the format's own ImageIO: no factory probing
    except RuntimeError:
        back = None
    if back is None or back.GetSize() != image.GetSize() or back.GetPixelID() != image.GetPixelID():
        raise write_failure(path, "the written file does not read back whole; the disk may be full")

def remove_stale_temps(folder: Path, name: str = "") -> list[str]:
    """Remove the hidden temp files and folders a killed run left in ``folder``; return their names.

    ``name``: only the temp files of this file (``results.json`` in an output root that may hold
    other things); all of this module's temp names where empty (the mask folder, ours alone).
    """
    removed: list[str] = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        if not _TEMP_NAME.match(p.name) or not p.name.startswith(f".{name}"):
            continue
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        except OSError:
            continue
        removed.append(p.name)
    return sorted(removed)

def write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp)`` on a hidden temp file beside ``path``, then rename it into place.

    A killed run leaves the old file or the new one, never a partial one (the temp file's name is
    one that ``remove_stale_temps`` clears).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_failure(path, _os_reason(exc)) from None
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise write_failure(path, _os_reason(exc)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

def write_text_atomic(text: str, path: Path) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text))

def json_safe(value: Any) -> Any:
    """NaN/inf -> None, numpy scalars and arrays -> Python ones, tuples -> lists: strict JSON."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value

def dumps_json(value: Any) -> str:
    """Strict JSON text (no NaN tokens, which many parsers reject), indented, newline-terminated."""
    return json.dumps(json_safe(value), indent=2, allow_nan=False) + "\n"

def write_json_atomic(value: Any, path: Path) -> None:
    write_text_atomic(dumps_json(value), path)
