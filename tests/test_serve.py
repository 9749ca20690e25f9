"""Registry and serving: promote the best run to `champion`, serve `models:/tiny-ner@champion`, POST sentences.

`mlflow models serve --env-manager local` runs the pyfunc in this venv (it needs the venv's bin/ on PATH for
uvicorn); the request body uses the model's signature: records with a `text` or a `tokens` column.
"""

from __future__ import annotations

import json
import sys

import mlflow
import pytest

from pipelines.promote import promote
from tests.test_mlflow_server import free_port, http, port_closed, server_env, serving


@pytest.fixture(scope="module")
def champion(trained_run):
    """The tiny run promoted to tiny-ner@champion (it is the only, so the best, run of its experiment)."""
    run_id, uri, _ = trained_run
    version = promote("smoke", "tiny-ner", tracking_uri=uri)
    return run_id, uri, version


def test_promote_points_the_alias_at_the_best_run_and_reuses_its_version(champion):
    run_id, uri, version = champion
    client = mlflow.MlflowClient(uri)
    assert version.run_id == run_id and "champion" in version.aliases
    assert len(client.search_model_versions("name = 'tiny-ner'")) == 1  # registered at training: reused, not re-added
    assert client.get_model_version_by_alias("tiny-ner", "champion").tags["best_dev_f1"]


def test_promote_refuses_an_experiment_without_candidates(champion):
    _, uri, _ = champion
    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment("empty-for-promote")
    with pytest.raises(SystemExit, match="no FINISHED run"):
        promote("empty-for-promote", "tiny-ner", tracking_uri=uri)


@pytest.mark.slow
def test_mlflow_models_serve_answers_raw_sentences_with_entities(champion, tmp_path):
    run_id, uri, _ = champion
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/tiny-ner@champion"]
    cmd += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    env = server_env(MLFLOW_TRACKING_URI=uri)
    text = "Peter visited Germany on Monday ."  # a training sentence: the tiny model knows it
    with serving(cmd, f"{base}/ping", tmp_path / "serve.log", env=env):
        status, body = http(f"{base}/invocations", {"dataframe_records": [{"text": text}, {"text": "no names here"}]})
        assert status == 200, body[:2000]
        first, second = json.loads(body)["predictions"]
        assert first["tokens"] == text.split() and len(first["tags"]) == len(first["tokens"])
        for ent in first["entities"]:
            assert text[ent["start"] : ent["end"]] == ent["text"]
        assert {(e["text"], e["type"]) for e in first["entities"]} & {("Peter", "PER"), ("Germany", "LOC")}
        assert second["tokens"] == ["no", "names", "here"]

        status, body = http(f"{base}/invocations", {"inputs": [{"tokens": ["Peter", "visited", "Bonn", "."]}]})
        assert status == 200, body[:2000]
        (pred,) = json.loads(body)["predictions"]
        assert len(pred["tags"]) == 4 and all(e["token_end"] <= 4 for e in pred["entities"])
    assert port_closed(port), "the model server still listens after it was stopped"
