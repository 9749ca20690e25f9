"""Training checkpoints: everything needed to continue a run exactly, written atomically, read without pickle.

A checkpoint holds the model, optimiser and scheduler states, the RNG states, the epoch, the best dev F1 with its
weights, and the per-epoch history. It is written to a temporary file and renamed, so a kill during the write
leaves the previous checkpoint intact; a failed write (a full disk) removes its temporary file, and the next save
removes those of killed runs, so nothing keeps a disk full. It is read with `weights_only=True`, so a file carrying a
pickled object is refused instead of executed; a damaged one is one line saying what to do.

One process trains a run at a time: the process that resumes or starts a run holds an exclusive `flock` on
`<checkpoint folder>/.lock` until it exits (the kernel drops it when the process dies, whatever killed it, so a
stale lock is taken over by itself), and a second process on that run is refused at once, naming the holder.
A resume is refused too, before the run is reopened, when the composed config differs from the one the run logged.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import socket
import time
import zipfile
from pathlib import Path

import mlflow
import torch

from ner.tracking import store

LOCK_NAME = ".lock"
# Keys a resumed run may change: they decide where things go, how fast they run, or when training stops (so a
# finished run can be extended with more epochs), never what one epoch computes. Any other difference would
# silently mix two configurations in one run, so the resume is refused.
MAY_DIFFER = (
    "trainer.resume",
    "trainer.threads",
    "trainer.device",
    "trainer.progress",
    "trainer.checkpoint_dir",
    "trainer.keep_checkpoint",
    "trainer.eval_batch_size",
    "trainer.max_epochs",
    "trainer.max_minutes",
    "trainer.patience",
    "data.cache_dir",
    "tracking.",  # the store, the experiment and what is logged: not the training itself
)


class CheckpointError(store.TrackingError):
    """A checkpoint cannot be written, read or used; one line saying what to do (a TrackingError, so `ner.train`
    prints it as one line and exits 2)."""


_HELD: dict[Path, object] = {}  # checkpoint folder -> open lock file, held by this process until it exits


def save(path: str | Path, state: dict) -> None:
    """Write `state` to `path` atomically; on failure remove the temporary file and raise a `CheckpointError`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        tmp.unlink(missing_ok=True)  # a half-written file would keep a full disk full
        kept = f"the previous checkpoint {path} is kept" if path.is_file() else "no checkpoint is kept"
        free = shutil.disk_usage(path.parent).free
        raise CheckpointError(
            f"cannot write the checkpoint {path} ({_short(err)}; {free / 2**20:,.1f} MiB free there); {kept}: free "
            "space (or set trainer.checkpoint_dir), then resume with trainer.resume=last"
        ) from None


def _remove_stale_temporaries(path: Path) -> None:
    """Temporary files of other processes' saves: killed mid-write (this process holds the run's lock)."""
    mine = f".{path.name}.tmp-{os.getpid()}"
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        if tmp.name != mine:
            tmp.unlink(missing_ok=True)


def load(path: str | Path) -> dict:
    """The checkpoint at `path`; a damaged or foreign file is a `CheckpointError` saying what to do."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, EOFError, RuntimeError, ValueError, KeyError, IndexError) as err:
        raise CheckpointError(f"{path} is not a readable checkpoint ({_short(err)}); {_damaged_hint(path)}") from None
    except Exception as err:  # noqa: BLE001 - an UnpicklingError of a file carrying a pickled object, and kin
        raise CheckpointError(f"{path} is refused ({_short(err)}); {_damaged_hint(path)}") from None


def check_readable(path: Path) -> None:
    """A `CheckpointError` now for a truncated or damaged checkpoint (every CRC of its zip checked, nothing
    unpickled), instead of once the run is reopened, where the error would mark it FAILED."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable checkpoint ({_short(err)}); {_damaged_hint(path)}") from None
    if bad is not None:
        raise CheckpointError(f"{path} is damaged ({bad} fails its CRC check); {_damaged_hint(path)}")


def _damaged_hint(path: Path) -> str:
    return (
        f"delete it (or its folder {path.parent}) and train without trainer.resume to start a new run; "
        "the run's epochs so far stay in MLflow"
    )


def _short(err: BaseException) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())[:300]


def folder(root: str | Path | None, run_id: str) -> Path:
    """Where a run's checkpoint lives: <root>/<run_id>, root defaulting to ./mlruns/checkpoints."""
    base = Path(root) if root else Path("mlruns") / "checkpoints"
    return base.resolve() / run_id


def hold(run_folder: str | Path, what: str) -> None:
    """Take this run's lock for the rest of the process, or raise a `CheckpointError` naming the holder.

    `what` names the run in the message (e.g. "trainer.resume=<id>"). A process trains one run at a time: taking
    another run's lock releases the previous one (Hydra's multirun trains its jobs one after another).
    """
    run_folder = Path(run_folder).resolve()
    if run_folder in _HELD:
        return
    run_folder.mkdir(parents=True, exist_ok=True)
    lock = open(run_folder / LOCK_NAME, "a+")  # noqa: SIM115 - held open until the process exits
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        lock.seek(0)
        holder = lock.read().strip() or "another process"
        lock.close()
        if err.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        raise CheckpointError(
            f"{what}: run {run_folder.name} is being trained by {holder}; wait for it to end or stop it "
            "(a lock of a process that died is taken over by itself)"
        ) from None
    for other in list(_HELD):
        release(other)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime())
    try:  # unbuffered: nothing is left to flush (and fail again) on close
        os.ftruncate(lock.fileno(), 0)
        os.write(lock.fileno(), f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n".encode())
    except OSError as err:
        lock.close()
        raise CheckpointError(f"cannot write {run_folder / LOCK_NAME} ({_short(err)}); free space there") from None
    _HELD[run_folder] = lock


def release(run_folder: str | Path) -> None:
    """Drop this process's lock on a run (it is dropped anyway when the process exits)."""
    lock = _HELD.pop(Path(run_folder).resolve(), None)
    if lock is not None:
        with contextlib.suppress(OSError):
            fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def find_resumable(
    cfg: store.TrackingConfig, resume: str | None, checkpoint_root: str | None, params: dict[str, str] | None = None
) -> str | None:
    """The run id to continue: `resume` itself, or for "last" the newest run of the experiment with a checkpoint.

    Before the run is reopened (an error inside `store.run` would mark it FAILED): the run's lock is taken, so a
    second process on it is refused, and `params` (the new composed config, flat) must equal what the run logged,
    but for the keys in `MAY_DIFFER`.
    """
    if not resume:
        return None
    store.connect(cfg)
    if resume != "last":
        if not folder(checkpoint_root, resume).joinpath("last.pt").is_file():
            raise store.TrackingError(f"trainer.resume={resume}: no checkpoint at {folder(checkpoint_root, resume)}")
        run_id = resume
    else:
        run_id = _last_with_checkpoint(cfg, checkpoint_root)
    hold(folder(checkpoint_root, run_id), f"trainer.resume={resume}")
    check_readable(folder(checkpoint_root, run_id) / "last.pt")
    if params is not None:
        _check_same_config(run_id, resume, params)
    return run_id


def _last_with_checkpoint(cfg: store.TrackingConfig, checkpoint_root: str | None) -> str:
    exp = mlflow.get_experiment_by_name(cfg.experiment)
    runs = mlflow.search_runs([exp.experiment_id], order_by=["start_time DESC"], output_format="list")
    for r in runs:
        if folder(checkpoint_root, r.info.run_id).joinpath("last.pt").is_file():
            return r.info.run_id
    raise store.TrackingError(
        f"trainer.resume=last: no run of experiment {cfg.experiment!r} has a checkpoint to resume"
    )


def _logged_config(run_id: str, resume: str) -> dict[str, str]:
    """The run's composed config, flat: its `config.yaml` artifact (what `params` is made from, whereas its logged
    params hold some values as used, such as the vectors' `model.word_dim`); its params if there is no such file."""
    import tempfile

    from omegaconf import OmegaConf

    client = mlflow.MlflowClient()
    try:
        with tempfile.TemporaryDirectory(prefix="ner-resume-") as tmp:
            try:
                path = client.download_artifacts(run_id, "config.yaml", tmp)
            except (mlflow.exceptions.MlflowException, OSError):
                return client.get_run(run_id).data.params
            return store.flatten(OmegaConf.to_container(OmegaConf.load(path), resolve=True))
    except mlflow.exceptions.MlflowException as err:
        raise store.TrackingError(f"trainer.resume={resume}: run {run_id} cannot be read ({err.message})") from None


def _check_same_config(run_id: str, resume: str, params: dict[str, str]) -> None:
    """Refuse a resume whose composed config differs from the run's (but for `MAY_DIFFER`), naming each key."""
    logged = _logged_config(run_id, resume)
    if not logged:
        return  # killed before its config was logged: nothing to compare with
    # the keys of the composed config only: a run's params also hold values that are not config (data sizes, ...)
    differ = [k for k in sorted(params) if not k.startswith(MAY_DIFFER) and logged.get(k) != params[k]]
    if differ:
        changes = ", ".join(f"{k}: {logged.get(k, '(absent)')} -> {params.get(k, '(absent)')}" for k in differ)
        allowed = ", ".join(k.rstrip(".") + ("*" if k.endswith(".") else "") for k in MAY_DIFFER)
        raise CheckpointError(
            f"trainer.resume={resume}: run {run_id} was trained with another config ({changes}); resume it with "
            f"its own values (only {allowed} may change), or train a new run without trainer.resume"
        )
