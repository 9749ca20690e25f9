"""MLflow: one store for every run (absolute URI), params from the composed config, metrics, artifacts, model.

The default store is SQLite inside ./mlruns with artifacts beside it, so `mlflow ui` over that one folder sees
every run, whatever Hydra does with working directories, and the old file store's traps never trigger.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow

from ner.config import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the `ner` package (ner.__file__ is None in some editable installs)
PARENT_RUN_ENV = "NER_PARENT_RUN_ID"  # set by a sweep for jobs that run outside its process: their parent run
PIP_REQUIREMENTS = ["torch==2.13.0", "numpy", "pandas", "mlflow"]


@dataclass
class TrackingConfig:
    uri: str | None = None  # MLflow tracking URI; None = SQLite store in ./mlruns
    experiment: str = "ner"  # experiment name
    run_name: str | None = None  # None = derived from the model config and seed
    register_as: str | None = None  # registered-model name, if any
    log_model: bool = True  # log the pyfunc model
    grad_profile_every: int = 1  # gradient-vs-distance profile every N epochs (ner/gradients.py); 0 = off

    def __post_init__(self) -> None:  # Hydra reads `tracking.experiment=2024` as an int and `=nan` as a float
        if self.experiment is None or self.experiment == "":
            raise ConfigError("tracking.experiment needs a name (quote names Hydra reads otherwise: '\"2024.10\"')")
        self.experiment = str(self.experiment)
        self.run_name = None if self.run_name is None else str(self.run_name)
        self.register_as = None if self.register_as is None else str(self.register_as)


def default_store(root: str | Path = ".") -> tuple[str, str]:
    """(tracking URI, artifact root) of the project store under `root`/mlruns, both absolute."""
    mlruns = Path(root).resolve() / "mlruns"
    mlruns.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{mlruns / 'mlflow.db'}", (mlruns / "artifacts").as_uri()


def store_uri(explicit: str | None = None, root: str | Path = ".") -> str:
    """The store every tool of the project uses: the explicit option (`tracking.uri=`, `tracking_uri=`,
    `--tracking-uri`), else MLflow's standard `MLFLOW_TRACKING_URI`, else the project store `./mlruns`."""
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or default_store(root)[0]


def connect(cfg: TrackingConfig) -> str:
    """Point MLflow at the store (`store_uri`) and the experiment; returns the experiment id."""
    uri = store_uri(cfg.uri)
    check_reachable(uri)
    artifact_root = None
    if uri.startswith("sqlite:///"):  # keep artifacts beside the database, not in whatever the cwd is
        artifact_root = (Path(uri[len("sqlite:///") :]).parent / "artifacts").resolve().as_uri()
    mlflow.set_tracking_uri(uri)
    with _sqlite_init_lock(uri):
        exp = mlflow.get_experiment_by_name(cfg.experiment)
        if exp is not None:
            if f"mlflow.sharedViewState.{HEADLINE_VIEW}" not in exp.tags:  # an experiment older than the view
                _install_headline_view(exp.experiment_id)
            return exp.experiment_id
        location = f"{artifact_root}/{cfg.experiment}" if artifact_root else None
        experiment_id = mlflow.create_experiment(cfg.experiment, artifact_location=location)
        _install_headline_view(experiment_id)
        return experiment_id


# The MLflow UI (3.17) opens an experiment on its GenAI overview unless the URL says workflowType=machine_learning
# (it reads no experiment tag for that: mlflow/mlflow#24498), and its runs table shows no metric column by default.
# A saved view (experiment tag mlflow.sharedViewState.<key>, the UI's "Views" menu) holds columns and sort order;
# `runs_url` opens the runs table with it. Installed once per experiment: a user's own edits to it are kept.
HEADLINE_VIEW = "headline"
HEADLINE_COLUMNS = [
    "metrics.`test/f1`",
    "metrics.`test/f1_strict`",
    "metrics.`dev/f1`",
    "metrics.`train/minutes`",
    "tags.`overrides`",
    "attributes.`Models`",
]


def _install_headline_view(experiment_id: str) -> None:
    client = mlflow.MlflowClient()
    now = int(time.time() * 1000)
    state = {"orderByKey": "metrics.`test/f1`", "orderByAsc": False, "selectedColumns": HEADLINE_COLUMNS}
    view = {"name": "Headline scores", "createdAt": now, "updatedAt": now, "state": json.dumps(state)}
    client.set_experiment_tag(experiment_id, f"mlflow.sharedViewState.{HEADLINE_VIEW}", json.dumps(view))
    client.set_experiment_tag(experiment_id, "mlflow.experimentKind", "custom_model_development")  # unread by 3.17


def runs_url(experiment_id: str, uri: str | None = None) -> str:
    """The link that opens the experiment's runs table with the headline scores: on the tracking server itself
    when there is one, else where `mlflow ui` serves by default (README, "Browse runs")."""
    uri = uri or mlflow.get_tracking_uri()
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={HEADLINE_VIEW}"


@contextlib.contextmanager
def _sqlite_init_lock(uri: str) -> Iterator[None]:
    """Serialise the first touch of a SQLite store: two runs creating its tables at once corrupt the migration."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock_path = Path(uri[len("sqlite:///") :]).with_suffix(".init.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def run(
    cfg: TrackingConfig, run_name: str, tags: dict[str, str], run_id: str | None = None
) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run that ends FINISHED, FAILED (exception) or KILLED (Ctrl-C / SIGTERM), never RUNNING.

    With `run_id`, that run is reopened (resuming after a crash), so its metrics continue in place.
    """
    experiment_id = connect(cfg)
    nested = mlflow.active_run() is not None
    parent_id = os.environ.get(PARENT_RUN_ENV)
    if parent_id and not nested:  # a sweep job in another process or on another machine (ner/training/sweep.py)
        tags = {**tags, "mlflow.parentRunId": parent_id}
    if run_id is not None:
        active = mlflow.start_run(run_id=run_id, nested=nested)
        mlflow.set_tag("resumed", "true")
    else:
        active = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags, nested=nested)
    try:
        yield active
    except KeyboardInterrupt:
        mlflow.end_run(status="KILLED")
        raise
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    mlflow.end_run(status="FINISHED")


# What training logs, as the MLflow UI groups it: a chart section per prefix before "/" (epoch/, dev/, test/, train/,
# gradients/). Code keeps the plain names (`best_dev_f1`, `test_f1`, `train_loss`, ...); these two functions are the
# one place they turn into logged names and back, so a reader also understands runs logged before the prefixes.
FINAL_OF_TRAINING = ("best_epoch", "epochs", "train_minutes")
LOGGED_PREFIXES = (("best_dev_", "dev/"), ("test_", "test/"), ("grad_norm_", "gradients/norm_"))


def logged_name(key: str) -> str:
    """best_dev_f1 -> dev/f1, test_f1 -> test/f1, train_minutes -> train/minutes, temperature -> dev/temperature,
    grad_norm_d20 -> gradients/norm_d20; anything else is per epoch: train_loss -> epoch/train_loss."""
    for plain, logged in LOGGED_PREFIXES:
        if key.startswith(plain):
            return logged + key[len(plain) :]
    if key in FINAL_OF_TRAINING:
        return "train/" + key.removeprefix("train_")
    if key == "temperature":
        return "dev/temperature"
    return "epoch/" + key


def logged(values: dict[str, float]) -> dict[str, float]:
    return {logged_name(k): float(v) for k, v in values.items()}


def plain_name(name: str) -> str:
    """The inverse of `logged_name`; a name without a known prefix (a run logged before them) is returned as is."""
    if name == "dev/temperature":
        return "temperature"
    if name.startswith("train/"):
        key = name.removeprefix("train/")
        return key if key in FINAL_OF_TRAINING else f"train_{key}"
    if name.startswith("epoch/"):
        return name.removeprefix("epoch/")
    for plain, prefix in LOGGED_PREFIXES:
        if name.startswith(prefix):
            return plain + name[len(prefix) :]
    return name


def metrics_of(run) -> dict[str, float]:
    """A run's final metrics under their plain names (`best_dev_f1`, `test_f1`, ...), old runs and new alike."""
    return {plain_name(k): v for k, v in run.data.metrics.items()}


def history(client, run_id: str, key: str) -> list:
    """The per-step values of a plain-named metric (`dev_f1`, `train_loss`), under its logged name or, for a run
    logged before the prefixes, its plain one."""
    return client.get_metric_history(run_id, logged_name(key)) or client.get_metric_history(run_id, key)


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
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=PACKAGE_DIR)
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


def log_model(tagger_dir: str | Path, register_as: str | None = None):
    """Log the tagger as a pyfunc named "model" (models from code, the package shipped with it). No signature:
    the pyfunc takes several input forms and checks them itself (ner/tagging/pyfunc.py says why)."""
    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp) / "ner"
        shutil.copytree(PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(package / "tagging" / "pyfunc.py"),
            artifacts={"tagger": str(tagger_dir)},
            code_paths=[str(package)],
            pip_requirements=PIP_REQUIREMENTS,
            registered_model_name=register_as,
        )


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message says which URI and what to do."""


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail in seconds, not minutes, when an HTTP tracking server is down (MLflow itself retries for long)."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as resp:
            resp.read()
    except (OSError, ValueError) as err:
        raise TrackingError(
            f"tracking.uri={uri} is not reachable ({err}); start the server or pass another tracking.uri"
        ) from None
