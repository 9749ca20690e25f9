"""Model URIs -> a loaded `Tagger`: MLflow runs, registry versions and aliases, the best run, or a local folder.

Bulk tagging loads the bare tagger (`tagger.json` + `weights.pt`) rather than the pyfunc: no model code is run,
nothing is pickled, and the tagger comes back as a plain `torch.nn.Module` that `ner.model.engine` drives at full
speed. Accepted forms:

- `runs:/<run_id>/model`: the model logged by a training run;
- `models:/<name>@<alias>` and `models:/<name>/<version>`: the model registry;
- `best:<experiment>`: the finished run of that experiment with a logged model and the highest dev F1 (`dev/f1`)
  (`best_run`; `best:` alone means experiment `ner`, the training default);
- a local folder: one written by `Tagger.save`, or a downloaded MLflow model folder (holding `artifacts/tagger`).

Stores: `tracking_uri`, else `MLFLOW_TRACKING_URI`, else the project store `./mlruns`, as in training (`store_uri`).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ner.model.tagger import Tagger
from ner.tracking.store import store_uri

MLFLOW_SCHEMES = ("runs:/", "models:/")
BEST_METRIC = "dev/f1"  # the final dev F1 that training logs once per run (`store.logged_name("best_dev_f1")`)
RANKING_METRICS = (BEST_METRIC, "best_dev_f1", "dev_f1")  # the same under the names of older runs (dev_f1: per epoch,
# the last one counts)
TAGGER_IN_MODEL = "artifacts/tagger"  # where tracking.log_model puts the tagger inside an MLflow model
_QUIET = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


class ModelError(ValueError):
    """A model URI that cannot be resolved or loaded; the message says what to try instead."""


def load(uri: str, tracking_uri: str | None = None, device: str = "cpu") -> Tagger:
    """Resolve `uri` (any form above) and load the tagger on `device`, in eval mode."""
    with resolve(uri, tracking_uri) as folder:
        return load_folder(folder, device)


@contextlib.contextmanager
def resolve(uri: str, tracking_uri: str | None = None) -> Iterator[Path]:
    """A local folder holding `tagger.json` and `weights.pt` for `uri`; downloads are removed on exit."""
    uri = str(uri).strip()
    if not uri:
        raise ModelError("no model given: pass model=runs:/<run_id>/model, models:/<name>@<alias>, best:<experiment>")
    if uri.startswith("best:"):
        uri = best_run_uri(uri[len("best:") :] or "ner", tracking_uri)
    if uri.startswith(MLFLOW_SCHEMES):
        with _store(tracking_uri), tempfile.TemporaryDirectory(prefix="ner-model-") as tmp:
            yield _download(uri, tmp)
        return
    yield local_folder(uri)


def local_folder(path: str | Path) -> Path:
    """The tagger folder inside a local path: the path itself, or `<path>/artifacts/tagger` of an MLflow model."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelError(
            f"model {str(path)!r} is neither an existing folder nor a runs:/, models:/ or best: URI"
            " (a run's model is runs:/<run_id>/model; list runs with `mlflow ui`)"
        )
    for candidate in (path, path / TAGGER_IN_MODEL, path / "tagger"):
        if (candidate / "tagger.json").is_file() and (candidate / "weights.pt").is_file():
            return candidate
    raise ModelError(f"{path} holds no tagger: expected tagger.json and weights.pt in it or in {TAGGER_IN_MODEL}/")


def best_run_uri(experiment: str, tracking_uri: str | None = None) -> str:
    """`runs:/<id>/model` of `best_run(experiment)`."""
    with _store(tracking_uri):
        return f"runs:/{best_run(experiment).info.run_id}/model"


def best_run(experiment: str, metrics: tuple[str, ...] = RANKING_METRICS):
    """The best run of an experiment, the one definition that `best:<experiment>` and `pipelines.promote` share:
    the FINISHED run with a logged model and the highest dev F1 (`dev/f1`) (dev, never test: choosing on test would
    make the reported test score a selected one). Runs logged before `dev/f1` existed are ranked by their
    last `dev_f1` if no run has the former. Uses the current MLflow tracking URI."""
    import mlflow

    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        raise ModelError(
            f"best:{experiment}: no experiment {experiment!r} in {mlflow.get_tracking_uri()} (train one with"
            f" `python -m ner.train tracking.experiment={experiment}`, or pass model=<URI> / tracking_uri=<store>)"
        )
    with_model = {
        m.source_run_id
        for m in mlflow.search_logged_models(experiment_ids=[exp.experiment_id], output_format="list")
        if m.source_run_id
    }
    for metric in metrics:
        runs = mlflow.search_runs(
            [exp.experiment_id],
            filter_string=f"attributes.status = 'FINISHED' and metrics.`{metric}` > -1",
            order_by=[f"metrics.`{metric}` DESC", "attributes.start_time DESC"],
            output_format="list",
        )
        for run in runs:
            if run.info.run_id in with_model:
                return run
    raise ModelError(
        f"best:{experiment}: no FINISHED run of experiment {experiment!r} has a logged model and a {metrics[0]} metric"
    )


def load_folder(folder: str | Path, device: str = "cpu") -> Tagger:
    """`Tagger.load`, with anything that stops it (a missing or corrupt file, other weights) as one `ModelError`."""
    try:
        return Tagger.load(folder, device)
    except (OSError, KeyError, TypeError, ValueError, RuntimeError, pickle.UnpicklingError) as err:
        raise ModelError(f"{folder}: not a loadable tagger ({type(err).__name__}: {str(err)[:300]})") from err


@contextlib.contextmanager
def _store(tracking_uri: str | None) -> Iterator[None]:
    """Point MLflow at `tracking_uri` (or the project store) for `runs:/`, `models:/` and search; restore after.

    MLflow resolves `runs:/` and `models:/` through the global URIs even when `download_artifacts` is given
    explicit ones, so the globals are what must be set. The registry follows the tracking URI unless it was set
    to another store; an unset tracking URI is restored as unset (not pinned to its default).
    """
    import mlflow
    from mlflow.tracking import is_tracking_uri_set

    tracking_before = mlflow.get_tracking_uri() if is_tracking_uri_set() else None
    registry_before = mlflow.get_registry_uri() if mlflow.get_registry_uri() != mlflow.get_tracking_uri() else None
    quiet_before = os.environ.get(_QUIET)
    uri = store_uri(tracking_uri)
    mlflow.set_tracking_uri(uri)
    if registry_before is not None:
        mlflow.set_registry_uri(uri)
    os.environ[_QUIET] = "false"  # no "Downloading artifacts" bar beside the tagging one
    try:
        yield
    finally:
        mlflow.set_tracking_uri(tracking_before)
        if registry_before is not None:
            mlflow.set_registry_uri(registry_before)
        if quiet_before is None:
            os.environ.pop(_QUIET, None)
        else:
            os.environ[_QUIET] = quiet_before


def _download(uri: str, dst: str) -> Path:
    """Download only the tagger of an MLflow model URI (not the copied code and environment files)."""
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    try:
        path = download_artifacts(artifact_uri=f"{uri.rstrip('/')}/{TAGGER_IN_MODEL}", dst_path=dst)
    except MlflowException as err:
        hint = "check the id/name with `mlflow ui`, or pass tracking_uri=<store> if the model is in another store"
        raise ModelError(f"cannot load model {uri!r}: {err.message.strip()} ({hint})") from None
    return local_folder(path)
