"""weights/manifest.json: what each shipped checkpoint is, and its sha256.

The container checks the hashes at start-up so that a truncated or swapped weight file fails fast,
naming the file, before any case is read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common.atomic import write_json_atomic

from .network import CheckpointError, sha256_of

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "autopet-sw-unet-weights/1"


def write_manifest(folder: Path, models: list[dict[str, Any]], **info: Any) -> Path:
    """Write the manifest for checkpoints already in ``folder``; each model dict needs a 'file' key.

    The sha256 of every file is computed here, so the manifest always matches what is on disk.
    """
    folder = Path(folder)
    entries = []
    for model in models:
        path = folder / model["file"]
        if not path.is_file():
            raise CheckpointError(f"{path}: listed in the manifest but not found")
        entries.append({**model, "sha256": sha256_of(path), "bytes": path.stat().st_size})
    manifest = {"format": MANIFEST_FORMAT, **info, "models": entries}
    target = folder / MANIFEST_NAME
    write_json_atomic(manifest, target)
    return target


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The folder's manifest, or None when it has none (e.g. the authors' 0.pt ... 4.pt)."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable manifest ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise CheckpointError(f"{path}: manifest has no 'models' list")
    return data


def verify_manifest(folder: Path) -> list[Path]:
    """Check every listed checkpoint exists and matches its sha256; return them in manifest order."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        raise CheckpointError(f"{folder / MANIFEST_NAME}: manifest not found")
    files = []
    for entry in manifest["models"]:
        path = folder / str(entry.get("file", ""))
        if not path.is_file():
            raise CheckpointError(f"{path}: checkpoint listed in {MANIFEST_NAME} is missing")
        expected = entry.get("sha256")
        if expected and sha256_of(path) != expected:
            raise CheckpointError(f"{path}: sha256 does not match {MANIFEST_NAME} (corrupt or replaced file)")
        files.append(path)
    if not files:
        raise CheckpointError(f"{folder / MANIFEST_NAME}: lists no checkpoints")
    return files
