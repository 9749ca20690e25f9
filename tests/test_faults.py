"""Faults a real user meets: a killed run resumed, Ctrl-C / SIGTERM, a dead tracking server, two runs at once."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch

from ner.tracking import store
from ner.training import checkpoint
from tests.conftest import ROOT, TINY, compose_train

pytestmark = pytest.mark.slow
history = store.history  # a per-epoch metric's values by its plain name (dev_f1), logged as epoch/dev_f1


def metric(run, key: str) -> float:
    """A run's final metric by its plain name (test_f1), logged as test/f1."""
    return store.metrics_of(run)[key]


def train_cmd(tmp: Path, experiment: str, *overrides: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ner.train",
        "experiment=smoke",
        f"data.path={TINY}",
        "data.max_train_samples=0",
        "data.max_eval_samples=0",
        f"data.cache_dir={tmp / 'cache'}",
        f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}",
        f"tracking.experiment={experiment}",
        f"trainer.checkpoint_dir={tmp / 'ckpt'}",
        "trainer.batch_size=2",
        "trainer.max_epochs=6",
        "trainer.patience=0",
        "tracking.log_model=false",
        f"hydra.run.dir={tmp / 'outputs' / experiment}",
        *overrides,
    ]


def start(cmd: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def wait_for_epoch(ckpt_root: Path, epoch: int, proc: subprocess.Popen, timeout: float = 120) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for path in ckpt_root.glob("*/last.pt"):
            try:
                if checkpoint.load(path)["epoch"] >= epoch:
                    return path
            except (EOFError, RuntimeError, OSError):
                pass  # caught between writes: atomic rename means the next read is whole
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.05)
    raise TimeoutError("no checkpoint appeared")


def final_run(tmp: Path, experiment: str):
    client = mlflow.MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    (run,) = client.search_runs([exp.experiment_id])
    return client, run


def test_a_run_killed_with_sigkill_resumes_to_the_same_result(tmp_path):
    keep = "trainer.keep_checkpoint=true"  # the finished runs' checkpoints hold their last and best weights
    straight = train_cmd(tmp_path, "straight", keep, f"trainer.checkpoint_dir={tmp_path / 'ckpt-straight'}")
    done = subprocess.run(straight, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    _, reference = final_run(tmp_path, "straight")

    proc = start(train_cmd(tmp_path, "killed", keep))
    wait_for_epoch(tmp_path / "ckpt", 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    _, killed = final_run(tmp_path, "killed")
    assert killed.info.status == "RUNNING"  # SIGKILL leaves no chance to say otherwise

    again = train_cmd(tmp_path, "killed", keep, "trainer.resume=last")
    resumed = subprocess.run(again, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    client, run = final_run(tmp_path, "killed")
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    for key in ("best_dev_f1", "test_f1", "test_f1_strict", "best_epoch"):
        assert metric(run, key) == metric(reference, key), key
    steps = sorted({m.step for m in history(client, run.info.run_id, "dev_f1")})
    assert steps == list(range(1, 7))
    ours = checkpoint.load(tmp_path / "ckpt" / run.info.run_id / "last.pt")
    theirs = checkpoint.load(tmp_path / "ckpt-straight" / reference.info.run_id / "last.pt")
    assert ours["epoch"] == theirs["epoch"] == 6
    assert_same_weights(ours["model"], theirs["model"])  # the last epoch's
    assert_same_weights(ours["best_state"], theirs["best_state"])  # the saved model's


def assert_same_weights(ours: dict, theirs: dict) -> None:
    assert ours.keys() == theirs.keys()
    differ = [k for k in ours if not torch.equal(ours[k], theirs[k])]
    assert not differ, f"weights differ: {differ}"


def test_a_run_stopped_mid_epoch_resumes_to_the_same_weights(tmp_path, monkeypatch):
    """In-process: a Stop halfway through epoch 3 (what a first Ctrl-C raises), then trainer.resume=<run_id>. The
    model it returns, and the last epoch's weights, are bit-equal to an uninterrupted run's."""
    from ner.training import pipeline
    from ner.training.trainer import Stop

    models, batches, stop_at = [], [], [0]
    real_fit = pipeline.fit

    def fit_stopping_at_a_batch(model, *args, should_stop, **kwargs):
        models.append(model)
        batches.append(0)

        def stop() -> bool:
            batches[-1] += 1
            return batches[-1] == stop_at[0]

        return real_fit(model, *args, should_stop=stop, **kwargs)

    monkeypatch.setattr(pipeline, "fit", fit_stopping_at_a_batch)

    def train(experiment: str, *overrides: str) -> dict:
        return pipeline.train(
            compose_train(
                tmp_path,
                f"tracking.experiment={experiment}",
                f"trainer.checkpoint_dir={tmp_path / 'ckpt'}",
                "trainer.keep_checkpoint=true",
                "trainer.batch_size=4",
                "trainer.max_epochs=4",
                "trainer.patience=0",
                "tracking.log_model=false",
                *overrides,
            )
        )

    reference = train("straight")
    per_epoch = batches[0] // 4
    stop_at[0] = 2 * per_epoch + per_epoch // 2
    with pytest.raises(Stop, match="stopped during epoch 3"):
        train("stopped")
    client, stopped = final_run(tmp_path, "stopped")
    assert stopped.info.status == "KILLED"
    assert checkpoint.load(tmp_path / "ckpt" / stopped.info.run_id / "last.pt")["epoch"] == 2

    stop_at[0] = 0
    resumed = train("stopped", f"trainer.resume={stopped.info.run_id}")
    assert resumed["run_id"] == stopped.info.run_id and client.get_run(resumed["run_id"]).info.status == "FINISHED"
    assert batches[2] == 2 * per_epoch  # epochs 3 and 4 again, from the start of epoch 3
    assert_same_weights(models[2].state_dict(), models[0].state_dict())
    last = [checkpoint.load(tmp_path / "ckpt" / r["run_id"] / "last.pt") for r in (resumed, reference)]
    assert_same_weights(last[0]["model"], last[1]["model"])
    for key in ("best_dev_f1", "test_f1", "best_epoch"):
        assert resumed[key] == reference[key], key


def test_sigterm_stops_at_the_next_batch_keeps_a_checkpoint_and_marks_the_run_killed(tmp_path):
    proc = start(train_cmd(tmp_path, "term", "trainer.max_epochs=50"))
    path = wait_for_epoch(tmp_path / "ckpt", 1, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "stopping after this batch" in out and "Traceback" not in out
    _, run = final_run(tmp_path, "term")
    assert run.info.status == "KILLED"
    assert checkpoint.load(path)["epoch"] >= 1


def read_until(stream, text: str) -> str:
    """Lines of a child's output up to the first one holding `text` (fails if the child ends first)."""
    seen = []
    for line in stream:
        seen.append(line)
        if text in line:
            return "".join(seen)
    raise AssertionError(f"{text!r} never came:\n" + "".join(seen)[-3000:])


STOP_MESSAGE = re.compile(
    r"stopped during epoch (\d+); resume with trainer\.resume=[0-9a-f]{32} "
    r"\(the run is marked KILLED; its checkpoint is kept\)"
)


def test_ctrl_c_stops_after_the_batch_with_one_line_exit_130_and_the_run_killed(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = train_cmd(tmp_path, "ctrl-c", "trainer.max_epochs=200")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        read_until(proc.stdout, "epoch   1 ")  # training has started, its first checkpoint is next
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    lines = err.splitlines()
    notice = lines.index("signal 2: stopping after this batch (send again to stop at once)")
    (message,) = lines[notice + 1 :]
    stopped_in = int(STOP_MESSAGE.fullmatch(message).group(1))
    _, run = final_run(tmp_path, "ctrl-c")
    assert run.info.status == "KILLED"
    state = checkpoint.load(tmp_path / "ckpt" / run.info.run_id / "last.pt")
    assert state["epoch"] == stopped_in - 1  # the last whole epoch: resuming replays the one Ctrl-C cut short


# `python -m ner.train` whose third batch takes a minute: long enough to tell "after this batch" from "at once"
SLOW_BATCH = """
import runpy, time
from ner.model.tagger import Tagger
real, calls = Tagger.loss, []
def loss(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == 3:
        print("slow batch", flush=True)
        time.sleep(60)
    return real(self, *args, **kwargs)
Tagger.loss = loss
runpy.run_module("ner.train", run_name="__main__", alter_sys=True)
"""


def test_a_second_ctrl_c_stops_at_once(tmp_path):
    proc = start([sys.executable, "-c", SLOW_BATCH, *train_cmd(tmp_path, "twice")[3:]])
    try:
        read_until(proc.stdout, "slow batch")
        proc.send_signal(signal.SIGINT)
        read_until(proc.stdout, "stopping after this batch")
        time.sleep(0.5)
        assert proc.poll() is None  # the first one waits for the batch to end
        t0 = time.time()
        proc.send_signal(signal.SIGINT)
        err, _ = proc.communicate(timeout=30)  # not the 60 s the batch would take (stderr goes to stdout here)
    finally:
        proc.kill()
    assert proc.returncode == 130 and time.time() - t0 < 30
    assert err.strip().splitlines()[-1] == "stopped at once (the run is marked KILLED; its last checkpoint is kept)"
    assert "Traceback" not in err
    _, run = final_run(tmp_path, "twice")
    assert run.info.status == "KILLED"


def test_a_loss_turning_nan_fails_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    """Fault injection: from epoch 3 on the loss is NaN, as a diverging run would make it."""
    from ner.training import trainer
    from ner.training.pipeline import train

    real_epoch = trainer.train_epoch

    def diverging_epoch(model, *args, **kwargs):
        if args[5] >= 3:  # the epoch number
            monkeypatch.setattr(model, "loss", lambda batch: torch.tensor(float("nan")))
        return real_epoch(model, *args, **kwargs)

    monkeypatch.setattr(trainer, "train_epoch", diverging_epoch)
    cfg = compose_train(
        tmp_path,
        "tracking.experiment=diverging",
        f"trainer.checkpoint_dir={tmp_path / 'ckpt'}",
        "trainer.max_epochs=6",
        "trainer.patience=0",
        "tracking.log_model=false",
    )
    with pytest.raises(FloatingPointError, match="loss became nan at epoch 3, batch 1; the last good checkpoint"):
        train(cfg)
    client, run = final_run(tmp_path, "diverging")
    assert run.info.status == "FAILED"
    assert [m.step for m in history(client, run.info.run_id, "dev_f1")] == [1, 2]
    state = checkpoint.load(tmp_path / "ckpt" / run.info.run_id / "last.pt")
    assert state["epoch"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_unreachable_tracking_server_fails_within_seconds(tmp_path):
    cmd = train_cmd(tmp_path, "x")
    cmd = [c if not c.startswith("tracking.uri=") else "tracking.uri=http://127.0.0.1:9" for c in cmd]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "tracking.uri=http://127.0.0.1:9 is not reachable" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert time.time() - t0 < 30


def test_two_trainings_at_once_against_one_store_both_complete(tmp_path):
    procs = [start(train_cmd(tmp_path, "shared", f"seed={s}", "trainer.max_epochs=3")) for s in (1, 2)]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out[-3000:]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("shared")
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
    for r in runs:
        assert len(history(client, r.info.run_id, "dev_f1")) == 3
        assert metric(r, "test_f1") is not None


def test_a_checkpoint_carrying_a_pickled_object_is_refused(tmp_path):
    torch.save({"epoch": 1, "payload": ValueError("code")}, tmp_path / "last.pt")
    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported global"):
        checkpoint.load(tmp_path / "last.pt")


def test_metrics_survive_the_store_going_away_mid_run(tmp_path, monkeypatch, capsys):
    from ner.tracking import backlog, store

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = store.TrackingConfig(uri=uri, experiment="flaky")
    log = backlog.MetricLog()
    previous = mlflow.get_tracking_uri()
    try:
        with store.run(cfg, "flaky", {}) as active:
            log.log({"dev_f1": 1.0}, 1)
            mlflow.set_tracking_uri("http://127.0.0.1:9")  # the store disappears
            log.log({"dev_f1": 2.0}, 2)
            log.log({"dev_f1": 3.0}, 3)
            assert len(log.pending) == 2
            mlflow.set_tracking_uri(uri)  # and comes back
            log.flush()
    finally:
        mlflow.set_tracking_uri(previous)
    assert "tracking store unavailable" in capsys.readouterr().out
    history = mlflow.MlflowClient(uri).get_metric_history(active.info.run_id, "dev_f1")
    assert [(m.step, m.value) for m in history] == [(1, 1.0), (2, 2.0), (3, 3.0)]


def test_a_tracking_server_that_goes_away_does_not_stall_the_epochs(tmp_path, monkeypatch):
    """MLflow's default retries (7, with backoff: minutes per call) against a closed port: every epoch's log returns
    in about a second, and the backlog goes out once the store is back."""
    import socket

    from ner.tracking import backlog, store

    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    log = backlog.MetricLog(retry_every=0.0)  # check on every epoch: the slowest case
    previous = mlflow.get_tracking_uri()
    try:
        with store.run(store.TrackingConfig(uri=uri, experiment="gone"), "gone", {}) as active:
            log.log({"dev_f1": 1.0}, 1)
            mlflow.set_tracking_uri(f"http://127.0.0.1:{port}")
            for step in (2, 3, 4):
                t0 = time.perf_counter()
                log.log({"dev_f1": float(step)}, step)
                assert time.perf_counter() - t0 < 5, f"epoch {step} stalled"
            assert len(log.pending) == 3
            mlflow.set_tracking_uri(uri)
            log.log({"dev_f1": 5.0}, 5)  # the server is back: the backlog goes out first
    finally:
        mlflow.set_tracking_uri(previous)
    history = mlflow.MlflowClient(uri).get_metric_history(active.info.run_id, "dev_f1")
    assert [m.step for m in history] == [1, 2, 3, 4, 5]
