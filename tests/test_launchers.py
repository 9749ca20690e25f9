"""Sweeps under the launchers that run jobs in other processes: the same MLflow record as a serial sweep.

Each test runs the real CLI (`python -m ner.train -m ...`) in a subprocess on the tiny corpus, with its own store
under tmp_path: joblib (loky worker processes) and Ray (a local single-node cluster on 127.0.0.1).
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from tests.conftest import run_sweep


def _sweep(tmp_path: Path, *overrides: str, env: dict[str, str] | None = None, timeout: float = 300):
    """The sweep's store and folder in tmp_path; the parsed-corpus cache beside it, shared by a test's sweeps."""
    fast = ("tracking.log_model=false", "tracking.grad_profile_every=0", "trainer.max_epochs=1")
    return run_sweep(tmp_path, *fast, *overrides, cache_dir=tmp_path.parent / "cache", env=env, timeout=timeout)


def _tree(tmp_path: Path) -> tuple[mlflow.MlflowClient, mlflow.entities.Run, dict[str, mlflow.entities.Run]]:
    """(client, the sweep's parent run, its children by job number); exactly one parent, every run a part of it."""
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("smoke")
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    children = {r.data.tags["sweep"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert len(children) == len(runs) - 1, "a run outside the sweep's tree"
    return client, parent, children


def _summary(client: mlflow.MlflowClient, parent: mlflow.entities.Run) -> list[dict]:
    path = client.download_artifacts(parent.info.run_id, "sweep_summary.csv")
    rows = list(csv.DictReader(io.StringIO(Path(path).read_text())))
    return [{k: v for k, v in r.items() if k != "run_ids"} for r in rows]


def _same(params: dict[str, str], folder: Path) -> dict[str, str]:
    """The sweep's params without the folder that differs between two sweeps of one test."""
    return {k: v.replace(str(folder), "") for k, v in params.items()}


def _needs(module: str, extra: str) -> None:
    pytest.importorskip(module, reason=f"the {extra} extra is not installed (pip install -e '.[{extra}]')")


@pytest.mark.slow
def test_joblib_runs_jobs_side_by_side_with_the_record_of_a_serial_sweep(tmp_path):
    _needs("hydra_plugins.hydra_joblib_launcher", "joblib")
    grid = ("model.cell=rnn,gru", "trainer.lr=0.05")
    serial = _sweep(tmp_path / "serial", *grid)
    assert serial.returncode == 0, serial.stderr[-3000:]
    parallel = _sweep(tmp_path / "joblib", *grid, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert parallel.returncode == 0, parallel.stderr[-3000:]

    client, parent, children = _tree(tmp_path / "joblib")
    s_client, s_parent, s_children = _tree(tmp_path / "serial")
    assert parent.info.status == "FINISHED" and parent.info.run_name == s_parent.info.run_name == "sweep-cell"
    assert "joblib" in parent.data.tags["launcher"]
    assert _same(parent.data.params, tmp_path / "joblib") == _same(s_parent.data.params, tmp_path / "serial")
    assert sorted(children) == sorted(s_children) == ["0", "1"]
    for num, child in children.items():
        assert child.info.status == "FINISHED" and child.info.run_name == s_children[num].info.run_name
        overrides = child.data.tags["overrides"].replace(str(tmp_path / "joblib"), "")
        assert overrides == s_children[num].data.tags["overrides"].replace(str(tmp_path / "serial"), "")
        assert child.data.params["trainer.threads"] == "1"
    assert _summary(client, parent) == _summary(s_client, s_parent)  # same settings, counts and scores
    assert parent.data.tags["best_run_id"] in {c.info.run_id for c in children.values()}
    assert (tmp_path / "joblib" / "multirun" / "sweep_summary.md").is_file()

    # side by side: each job started before the other one ended (MLflow's own start and end times)
    starts = [c.info.start_time for c in children.values()]
    ends = [c.info.end_time for c in children.values()]
    assert max(starts) < min(ends), f"the jobs ran one after another: starts {starts}, ends {ends}"
    s_starts = sorted(c.info.start_time for c in s_children.values())
    assert min(c.info.end_time for c in s_children.values()) <= s_starts[1]  # and the serial ones did not


@pytest.mark.slow
def test_a_failing_job_under_joblib_is_a_failed_child_and_the_others_go_on(tmp_path):
    _needs("hydra_plugins.hydra_joblib_launcher", "joblib")
    # lr=1e30 (unclipped) diverges inside its run; lr=fast fails in its worker before any run starts
    joblib = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    proc = _sweep(tmp_path, *joblib, "trainer.clip=0", "trainer.lr=0.05,1e30,fast")
    assert proc.returncode == 1, proc.stderr[-3000:]  # as for a serial sweep: every job ran, the sweep says failure
    assert "2 of 3 jobs FAILED" in proc.stderr
    client, parent, children = _tree(tmp_path)
    assert parent.info.status == "FINISHED" and parent.data.tags["failed_jobs"] == "2"
    assert [children[k].info.status for k in "012"] == ["FINISHED", "FAILED", "FAILED"]
    assert children["1"].data.tags["error"].startswith("FloatingPointError")
    assert children["2"].data.tags["error"].startswith("ConfigError: trainer.lr")
    assert children["2"].info.run_name == "job2-failed"
    rows = {r["setting"]: (r["finished"], r["failed"]) for r in _summary(client, parent)}
    assert rows == {"trainer.lr=0.05": ("1", "0"), "trainer.lr=1e+30": ("0", "1"), "trainer.lr=fast": ("0", "1")}


@pytest.mark.slow
def test_a_sweep_that_dies_leaves_a_failed_parent_that_says_why(tmp_path):
    _needs("hydra_plugins.hydra_joblib_launcher", "joblib")
    proc = _sweep(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=0", "seed=1,2")  # joblib refuses 0
    assert proc.returncode == 1
    _, parent, children = _tree(tmp_path)
    assert parent.info.status == "FAILED" and not children
    note = parent.data.tags["mlflow.note.content"]
    assert note.startswith("The sweep ended before its last job (FAILED): ValueError") and "0 jobs" in note


def _ray_starts(env: dict[str, str]) -> str:
    """'' if a local Ray cluster starts here, else why not (the last line Ray printed)."""
    probe = "import ray; ray.init(num_cpus=1, include_dashboard=False, object_store_memory=78643200); ray.shutdown()"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env={**os.environ, **env}
        )
    except subprocess.TimeoutExpired:
        return "ray.init() did not return within 120 s"
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    return "" if proc.returncode == 0 else (lines[-1] if lines else f"exit status {proc.returncode}")


@pytest.mark.slow
def test_ray_local_cluster_gives_the_same_tree(tmp_path):
    _needs("hydra_plugins.hydra_ray_launcher", "ray")
    loopback = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # Ray's local mode: every address is 127.0.0.1
    # 24 s on a quiet machine; a Ray cluster starting beside busy cores took over 300 s once
    proc = _sweep(tmp_path, "hydra/launcher=ray_local", "model.cell=rnn,gru", env=loopback, timeout=900)
    if proc.returncode != 0 and (why := _ray_starts(loopback)):
        pytest.skip(f"Ray cannot start a local cluster on this machine: {why}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    client, parent, children = _tree(tmp_path)
    assert parent.info.status == "FINISHED" and "ray" in parent.data.tags["launcher"]
    assert sorted(children) == ["0", "1"] and all(c.info.status == "FINISHED" for c in children.values())
    assert sorted(c.info.run_name.split("-")[0] for c in children.values()) == ["bigru", "birnn"]
    assert [r["setting"] for r in _summary(client, parent)] and parent.data.tags["failed_jobs"] == "0"


def test_the_app_pickles_by_value_as_launchers_send_it():
    """joblib and Ray cloudpickle the task function; run as `python -m ner.train` it is `__main__`'s, so it goes
    by value with every global it names (a module-level lock once stopped joblib with PicklingError)."""
    cloudpickle = pytest.importorskip("cloudpickle")
    import ner.train

    cloudpickle.register_pickle_by_value(ner.train)
    try:
        task = cloudpickle.loads(cloudpickle.dumps(ner.train.main.__wrapped__))
    finally:
        cloudpickle.unregister_pickle_by_value(ner.train)
    assert task.__name__ == "main" and callable(task)


def test_the_parent_run_id_travels_with_the_pickled_callback(monkeypatch):
    """Launchers pickle the callback with each job; its copy sets the parent id where the job runs."""
    cloudpickle = pytest.importorskip("cloudpickle")
    from omegaconf import OmegaConf

    from ner.tracking import store
    from ner.training.sweep import MlflowSweepCallback

    callback = MlflowSweepCallback()
    callback.parent_id = "0123abcd"
    copy = cloudpickle.loads(cloudpickle.dumps(callback))  # what a worker process receives
    monkeypatch.delenv(store.PARENT_RUN_ENV, raising=False)
    copy.on_job_start(OmegaConf.create({"hydra": {"job": {"num": 3}}}))
    assert os.environ[store.PARENT_RUN_ENV] == "0123abcd"
