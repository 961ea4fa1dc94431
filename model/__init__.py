"""The inference pipeline, one stage per module (see ``model/predictor.py`` for the order).

``from model import Predictor, ModelConfig`` is the public API; the names are resolved on first
use, so that light users of the package (``common``) do not import torch and MONAI.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

# MONAI warns on import, once per process, that a GPU DICOM decoder for pydicom is missing; pydicom
# decodes this project's DICOM itself, so the line would only alarm users (and every worker's log).
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)

if TYPE_CHECKING:
    from .config import ModelConfig
    from .predictor import Predictor

__all__ = ["ModelConfig", "Predictor"]


def __getattr__(name: str) -> Any:
    if name == "Predictor":
        from .predictor import Predictor

        return Predictor
    if name == "ModelConfig":
        from .config import ModelConfig

        return ModelConfig
    raise AttributeError(f"module 'model' has no attribute {name!r}")
