"""Training checkpoints: everything needed to continue a run exactly, written atomically, read without pickle.

A checkpoint holds the model, optimiser and scheduler states, the RNG states, the epoch, the best dev F1 with its
weights, and the per-epoch history. It is written to a temporary file and renamed, so a kill during the write
leaves the previous checkpoint intact; it is read with `weights_only=True`, so a file carrying a pickled object is
refused instead of executed.
"""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import torch

from ner.tracking import store


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


def find_resumable(
    cfg: store.TrackingConfig, resume: str | None, checkpoint_root: str | None, params: dict[str, str] | None = None
) -> str | None:
    """The run id to continue: `resume` itself, or for "last" the newest run of the experiment with a checkpoint."""
    if not resume:
        return None
    store.connect(cfg)
    if resume != "last":
        if not folder(checkpoint_root, resume).joinpath("last.pt").is_file():
            raise store.TrackingError(
                f"trainer.resume={resume}: no checkpoint at {folder(checkpoint_root, resume)}"
            )
        return resume
    exp = mlflow.get_experiment_by_name(cfg.experiment)
    runs = mlflow.search_runs([exp.experiment_id], order_by=["start_time DESC"], output_format="list")
    for r in runs:
        if folder(checkpoint_root, r.info.run_id).joinpath("last.pt").is_file():
            return r.info.run_id
    raise store.TrackingError(
        f"trainer.resume=last: no run of experiment {cfg.experiment!r} has a checkpoint to resume"
    )
