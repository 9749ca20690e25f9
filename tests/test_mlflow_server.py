"""The README's `mlflow ui` command, for real: on a free loopback port, over a project-style store with one run.

The store is what `python -m ner.train` writes with no `tracking.uri` (`./mlruns/mlflow.db`, artifacts beside it),
the command is read from the README, and the checks go through the REST API the UI itself uses.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from tests.conftest import ROOT, compose_train

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(url: str, body: dict | None = None, timeout: float = 10) -> tuple[int, bytes]:
    """(status, body) of a GET, or of a JSON POST when `body` is given."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def server_env(**extra: str) -> dict[str, str]:
    """The venv's bin/ first on PATH: `mlflow models serve` starts uvicorn through a shell found on PATH."""
    return {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no job runner: starts in ~3 s instead of ~10
        **extra,
    }


@contextlib.contextmanager
def serving(cmd: list[str], url: str, log: Path, timeout: float = 90, **popen) -> Iterator[subprocess.Popen]:
    """Start a server in its own process group, wait until `url` answers 200, and always stop it.

    SIGTERM goes to the server process itself (not a wrapping shell); whatever is left of its group (uvicorn or
    gunicorn workers) gets SIGTERM, then SIGKILL, so no test leaves a server behind.
    """
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **popen)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{cmd[:3]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(OSError):
                if http(url, timeout=2)[0] == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"{cmd[:3]} did not answer {url} within {timeout:.0f} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen, grace: float = 10) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    for sig in (signal.SIGTERM, signal.SIGKILL):  # the server's leftover workers, by its process group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
            time.sleep(1)
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)


def port_closed(port: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                return True
        time.sleep(0.3)
    return False


def readme_ui_command(port: int, cwd: Path) -> list[str]:
    """The README's `mlflow ui` (or `mlflow server`) line, run in `cwd` after the README's `export
    MLFLOW_TRACKING_URI=...` line (variables expanded as the shell would), moved to `port`, with one worker.

    One worker instead of the default four: on two shared cores four take ~20 s to start, one takes ~5 s.
    """
    text = README.read_text()
    lines = [m.group(1) for m in re.finditer(r"^\s*((?:\S*/)?mlflow (?:ui|server)\b.*)$", text, re.M)]
    assert lines, "README.md has no `mlflow ui ...` command to browse runs"
    exports = re.findall(r"^export (MLFLOW_TRACKING_URI)=(\S+)", text, re.M)
    env = {"PWD": str(cwd)}
    for name, value in exports:
        env[name] = os.path.expandvars(shlex.split(value)[0].replace("$PWD", str(cwd)))
    args = [a.replace("$MLFLOW_TRACKING_URI", env.get("MLFLOW_TRACKING_URI", "")) for a in shlex.split(lines[0])]
    assert "127.0.0.1" in args, "the README's UI command must bind 127.0.0.1"
    args = args if "--workers" in args else [*args, "--workers", "1"]
    for flag in ("--port", "-p"):
        if flag in args:
            args[args.index(flag) + 1] = str(port)
            return args
    return [*args, "--port", str(port)]


README = ROOT / "README.md"


@pytest.fixture
def restore_tracking_uri():
    """This test points MLflow at its own store: put the session's URI back (trained_run's tests rely on it)."""
    before = mlflow.get_tracking_uri()
    yield
    mlflow.set_tracking_uri(before)


@pytest.fixture
def project_store(tmp_path, monkeypatch, restore_tracking_uri) -> Path:
    """A folder holding what one training run with the default store leaves: mlruns/mlflow.db + artifacts."""
    from ner.training.pipeline import train

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # mlflow.set_tracking_uri sets it for the process
    cfg = compose_train(tmp_path, "tracking.uri=null", "tracking.log_model=false", "trainer.max_epochs=2")
    train(cfg)
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()
    return tmp_path


@pytest.mark.slow
def test_the_readme_ui_command_serves_the_project_store(project_store):
    port = free_port()
    cmd = readme_ui_command(port, project_store)
    base = f"http://127.0.0.1:{port}"
    with serving(cmd, f"{base}/health", project_store / "ui.log", cwd=project_store, env=server_env()):
        status, page = http(f"{base}/")
        assert status == 200 and b"<html" in page.lower()  # the UI itself, not just the API
        status, body = http(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=smoke")
        assert status == 200, body
        exp_id = json.loads(body)["experiment"]["experiment_id"]
        status, body = http(f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": [exp_id]})
        (run,) = json.loads(body)["runs"]
        assert run["info"]["status"] == "FINISHED" and run["info"]["run_name"] == "bilstm-crf-s1"
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        assert params["model.cell"] == "lstm" and params["trainer.max_epochs"] == "2"
        assert {"test/f1", "dev/f1", "epoch/dev_f1", "epoch/train_loss"} <= set(metrics)
        assert tags["cell"] == "lstm" and tags["mlflow.note.content"].startswith("**test F1")
        run_id = run["info"]["run_id"]
        status, body = http(f"{base}/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key=epoch/dev_f1")
        assert [m["step"] for m in json.loads(body)["metrics"]] == [1, 2]
        status, body = http(f"{base}/api/2.0/mlflow/artifacts/list?run_id={run_id}")
        assert status == 200 and "test_predictions.conll.txt" in {f["path"] for f in json.loads(body)["files"]}
    assert port_closed(port), "the UI still listens after it was stopped"
