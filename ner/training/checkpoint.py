"""Training checkpoints: everything needed to continue a run exactly, written atomically, read without pickle.

A checkpoint holds the model, optimiser and scheduler states, the RNG states, the epoch, the best dev F1 with its
weights, and the per-epoch history. It is written to a temporary file and renamed, so a kill during the write
leaves the previous checkpoint intact; it is read with `weights_only=True`, so a file carrying a pickled object is
refused instead of executed.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch


def save(path: str | Path, state: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load(path: str | Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def folder(root: str | Path | None, run_id: str) -> Path:
    """Where a run's checkpoint lives: <root>/<run_id>, root defaulting to ./mlruns/checkpoints."""
    base = Path(root) if root else Path("mlruns") / "checkpoints"
    return base.resolve() / run_id
