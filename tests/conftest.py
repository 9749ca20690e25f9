"""Shared fixtures: the tiny corpus, the real config tree, and a per-test MLflow store."""

from __future__ import annotations

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
