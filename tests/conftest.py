"""Shared fixtures: the tiny corpus, the real config tree, and a per-test MLflow store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
TINY = Path(__file__).parent / "fixtures" / "tiny"
SHARED = ROOT.parent / "shared" / "data"

torch.set_num_threads(1)


@pytest.fixture
def tiny_dir() -> Path:
    return TINY


def compose_train(tmp_path: Path, *overrides: str):
    """The real conf/ tree, shrunk to the tiny corpus and a private store under tmp_path."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(
            config_name="train",
            overrides=[
                "experiment=smoke",
                f"data.path={TINY}",
                f"data.cache_dir={tmp_path / 'cache'}",
                f"model.embeddings.cache_dir={tmp_path / 'vectors-cache'}",
                f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
                "data.max_train_samples=0",
                "data.max_eval_samples=0",
                *overrides,
            ],
        )


def run_sweep(
    tmp_path: Path,
    *overrides: str,
    cache_dir: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """`python -m ner.train -m experiment=smoke ...` on the tiny corpus, its store and sweep folder in tmp_path (the
    parsed-corpus cache in `cache_dir`, default tmp_path/cache), as a real process; no parent run inherited."""
    cmd = [sys.executable, "-m", "ner.train", "-m", "experiment=smoke", f"data.path={TINY}"]
    cmd += [f"data.cache_dir={cache_dir or tmp_path / 'cache'}", "data.max_train_samples=0", "data.max_eval_samples=0"]
    cmd += [f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"hydra.sweep.dir={tmp_path / 'multirun'}", *overrides]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", **(env or {})}
    env.pop("NER_PARENT_RUN_ID", None)
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One tiny training run shared by the tests that need a logged model: (run_id, tracking uri, metrics)."""
    import mlflow

    from ner.training.pipeline import train

    tmp = tmp_path_factory.mktemp("run")
    vectors = Path(__file__).parent / "fixtures" / "vectors.txt"
    cfg = compose_train(
        tmp,
        "trainer.max_epochs=25",
        "trainer.lr=0.05",
        "tracking.register_as=tiny-ner",
        f"model.embeddings.path={vectors}",
    )
    metrics = train(cfg)
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    return metrics["run_id"], uri, metrics
