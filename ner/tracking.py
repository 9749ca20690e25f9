"""MLflow: one store for every run (absolute URI), params from the composed config, metrics, artifacts, model.

The default store is SQLite inside ./mlruns with artifacts beside it, so `mlflow ui` over that one folder sees
every run, whatever Hydra does with working directories, and the old file store's traps never trigger.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, DataType, Schema

import ner

PIP_REQUIREMENTS = ["torch==2.13.0", "numpy", "pandas", "mlflow"]


@dataclass
class TrackingConfig:
    uri: str | None = None  # MLflow tracking URI; None = SQLite store in ./mlruns
    experiment: str = "ner"  # experiment name
    run_name: str | None = None  # None = derived from the model config and seed
    register_as: str | None = None  # registered-model name, if any
    log_model: bool = True  # log the pyfunc model


def default_store(root: str | Path = ".") -> tuple[str, str]:
    """(tracking URI, artifact root) of the project store under `root`/mlruns, both absolute."""
    mlruns = Path(root).resolve() / "mlruns"
    mlruns.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{mlruns / 'mlflow.db'}", (mlruns / "artifacts").as_uri()


def connect(cfg: TrackingConfig) -> str:
    """Point MLflow at the store and the experiment; returns the experiment id."""
    artifact_root = None
    if cfg.uri:
        mlflow.set_tracking_uri(cfg.uri)
    else:
        uri, artifact_root = default_store()
        mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(cfg.experiment)
    if exp is not None:
        return exp.experiment_id
    location = f"{artifact_root}/{cfg.experiment}" if artifact_root else None
    return mlflow.create_experiment(cfg.experiment, artifact_location=location)


@contextlib.contextmanager
def run(cfg: TrackingConfig, run_name: str, tags: dict[str, str]) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run that ends FINISHED, FAILED (exception) or KILLED (Ctrl-C / SIGTERM), never RUNNING."""
    experiment_id = connect(cfg)
    active = mlflow.start_run(
        experiment_id=experiment_id, run_name=run_name, tags=tags, nested=mlflow.active_run() is not None
    )
    try:
        yield active
    except KeyboardInterrupt:
        mlflow.end_run(status="KILLED")
        raise
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    mlflow.end_run(status="FINISHED")


def flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    """{'model': {'cell': 'lstm'}} -> {'model.cell': 'lstm'}: one readable param per config leaf."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(ner.__file__).parent
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def log_texts(files: dict[str, str]) -> None:
    """Log several text artifacts at once (name -> content)."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, content in files.items():
            path = Path(tmp) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
        mlflow.log_artifacts(tmp)


def signature() -> ModelSignature:
    """Raw texts in a `text` column or token lists in a `tokens` column; one dict per row out."""
    inputs = Schema(
        [ColSpec(DataType.string, "text", required=False), ColSpec(Array(DataType.string), "tokens", required=False)]
    )
    return ModelSignature(inputs=inputs)


def log_model(tagger_dir: str | Path, register_as: str | None = None):
    """Log the tagger as a pyfunc named "model" (models from code, the package shipped with it)."""
    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp) / "ner"
        shutil.copytree(Path(ner.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(package / "pyfunc_model.py"),
            artifacts={"tagger": str(tagger_dir)},
            code_paths=[str(package)],
            signature=signature(),
            input_example=[{"text": "EU rejects German call to boycott British lamb ."}],
            pip_requirements=PIP_REQUIREMENTS,
            registered_model_name=register_as,
        )
