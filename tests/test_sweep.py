"""Hydra multirun -> one MLflow parent run, a child per job, failures recorded, a summary table; promotion by dev F1.

The sweeps run through the real CLI (`python -m ner.train -m ...`) in a subprocess, on the tiny corpus, each in
its own store under tmp_path.
"""

from __future__ import annotations

import csv
import io
import math
import subprocess
from pathlib import Path

import mlflow
import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from ner.training.sweep import JobRecord, MlflowSweepCallback, mean_std, settings, summary_rows
from pipelines import study
from pipelines.promote import promote
from tests.conftest import run_sweep


@pytest.fixture
def restore_tracking_uri():
    """This test points MLflow at its own store: put the session's URI back (trained_run's tests rely on it)."""
    before = mlflow.get_tracking_uri()
    yield
    mlflow.set_tracking_uri(before)


def _sweep(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    return run_sweep(tmp_path, "trainer.threads=1", *overrides)


def _runs(tmp_path: Path, experiment: str = "smoke") -> tuple[mlflow.MlflowClient, list]:
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])


def _parent_and_children(runs: list) -> tuple:
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return parent, children


def _artifact_csv(client: mlflow.MlflowClient, run_id: str, name: str) -> list[dict]:
    path = client.download_artifacts(run_id, name)
    return list(csv.DictReader(io.StringIO(Path(path).read_text())))


@pytest.mark.slow
def test_a_sweep_is_one_parent_run_with_a_child_per_job_and_a_summary(tmp_path, restore_tracking_uri):
    proc = _sweep(tmp_path, "trainer.max_epochs=3", "trainer.lr=0.05", "seed=1,2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    client, runs = _runs(tmp_path)
    parent, children = _parent_and_children(runs)
    assert len(runs) == 3 and len(children) == 2
    assert parent.info.status == "FINISHED" and parent.info.run_name == "sweep-seed"
    assert parent.data.params["sweep.seed"] == "1,2" and "seed=1,2" in parent.data.tags["overrides"]
    assert sorted(c.data.tags["sweep"] for c in children) == ["0", "1"]
    assert sorted(c.info.run_name[-2:] for c in children) == ["s1", "s2"]  # pipeline.run_name: setting, then seed
    assert all(c.info.run_name.startswith("bilstm-crf") for c in children)
    assert all(c.info.status == "FINISHED" for c in children)

    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"sweep_summary.md", "sweep_summary.csv", "sweep_runs.csv", "multirun.yaml"} <= names
    (row,) = _artifact_csv(client, parent.info.run_id, "sweep_summary.csv")
    dev = [c.data.metrics["dev/f1"] for c in children]
    assert (row["setting"], row["finished"], row["failed"]) == ("all", "2", "0")
    assert math.isclose(float(row["best_dev_f1_mean"]), sum(dev) / 2, abs_tol=1e-9)
    best = max(children, key=lambda c: c.data.metrics["dev/f1"])
    assert parent.data.tags["best_run_id"] == best.info.run_id
    assert "dev/f1" not in parent.data.metrics  # the parent must never look like a promotable run
    summary = (tmp_path / "multirun" / "sweep_summary.md").read_text()
    assert "| all | 2 | 0 |" in summary and best.info.run_id in summary

    # the study's tables from this sweep: bucketed F1 from each run's predictions, gradient profile of each model
    out = tmp_path / "results"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert study.main(["--sweep-dir", str(tmp_path / "multirun"), "--tracking-uri", uri, "--out", str(out)]) == 0
    (row,) = list(csv.DictReader(io.StringIO((out / "study.csv").read_text())))
    assert (row["setting"], row["seeds"]) == ("bilstm", "2")
    assert math.isclose(float(row["test_f1_mean"]), sum(c.data.metrics["test/f1"] for c in children) / 2)
    assert float(row["f1_1-10_mean"]) >= 0 and row["f1_41+_mean"] == "nan"  # the tiny corpus has no long sentence
    assert "| bilstm | 2 |" in (out / "study.md").read_text() and (out / "study_gradients.png").stat().st_size

    # the champion is the child with the best dev F1, registered on promotion
    version = promote("smoke", "sweep-best", tracking_uri=uri)
    assert version.run_id == best.info.run_id and "champion" in version.aliases
    assert client.get_model_version_by_alias("sweep-best", "champion").version == version.version


@pytest.mark.slow
def test_failed_jobs_become_failed_children_and_the_sweep_goes_on(tmp_path):
    # lr=1e30 (unclipped) diverges inside the run (FloatingPointError); cell=bogus fails before any run starts
    proc = _sweep(
        tmp_path, "trainer.max_epochs=1", "tracking.log_model=false", "trainer.clip=0", "trainer.lr=0.05,1e30",
        "model.cell=lstm,bogus",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]  # like make -k: every job ran, but the sweep reports failure
    assert "3 of 4 jobs FAILED" in proc.stderr
    client, runs = _runs(tmp_path)
    parent, children = _parent_and_children(runs)
    assert parent.info.status == "FINISHED" and parent.data.tags["failed_jobs"] == "3"
    by_job = {c.data.tags["sweep"]: c for c in children}
    assert sorted(by_job) == ["0", "1", "2", "3"]
    assert by_job["0"].info.status == "FINISHED"
    assert [by_job[k].info.status for k in "123"] == ["FAILED"] * 3
    assert by_job["2"].data.tags["error"].startswith("FloatingPointError")
    assert by_job["1"].data.tags["error"].startswith("ConfigError: model.cell='bogus'")
    assert by_job["1"].info.run_name == "job1-failed"
    rows = {r["setting"]: r for r in _artifact_csv(client, parent.info.run_id, "sweep_summary.csv")}
    assert rows["trainer.lr=0.05 model.cell=lstm"]["finished"] == "1"
    assert rows["trainer.lr=1e+30 model.cell=lstm"]["failed"] == "1"  # the value as Hydra parsed it


@pytest.mark.slow
def test_optuna_search_runs_trials_as_children(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the sweep extra is not installed")
    proc = _sweep(tmp_path, "+hparams_search=optuna", "hydra.sweeper.n_trials=2", "tracking.log_model=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, runs = _runs(tmp_path)
    parent, children = _parent_and_children(runs)
    assert len(children) == 2 and parent.info.run_name.startswith("optuna-lr-dropout")
    assert parent.data.params["search.trainer.lr"] == "tag(log, interval(0.003, 0.05))"
    lrs = {c.data.params["trainer.lr"] for c in children}
    assert len(lrs) == 2 and all(0.003 <= float(lr) <= 0.05 for lr in lrs)
    assert (tmp_path / "multirun" / "optimization_results.yaml").is_file()


def test_a_single_run_keeps_hydra_behaviour():
    """Without a sweep there is no parent run, and a failed job stays failed (nothing is swallowed)."""
    callback = MlflowSweepCallback()
    ret = JobReturn(overrides=["seed=1"])
    ret.status, ret.return_value = JobStatus.FAILED, ValueError("boom")
    callback.on_job_end(OmegaConf.create({}), ret)
    assert ret.status == JobStatus.FAILED and isinstance(ret._return_value, ValueError)


def test_settings_group_by_what_varies_except_the_seed():
    jobs = [
        JobRecord(i, ["experiment=smoke", f"model.cell={cell}", f"seed={seed}"], "FINISHED")
        for i, (cell, seed) in enumerate([("rnn", 1), ("rnn", 2), ("lstm", 1), ("lstm", 2)])
    ]
    assert settings(jobs) == ["model.cell=rnn"] * 2 + ["model.cell=lstm"] * 2
    for job, f1 in zip(jobs, (80.0, 82.0, 90.0, 91.0), strict=True):
        job.metrics = {"best_dev_f1": f1, "test_f1": f1 - 5}
    jobs[1].status = "FAILED"
    rows = summary_rows(jobs)
    assert [r["setting"] for r in rows] == ["model.cell=lstm", "model.cell=rnn"]  # best dev F1 first
    assert (rows[1]["finished"], rows[1]["failed"], rows[1]["best_dev_f1_mean"]) == (1, 1, 80.0)
    assert math.isnan(rows[1]["best_dev_f1_std"])  # one seed: no spread rather than a fake 0
    mean, std = mean_std([90.0, 91.0])
    assert mean == 90.5 and math.isclose(std, 0.7071067811865476)
