"""Registry and serving: promote the best run to `champion`, serve `models:/tiny-ner@champion`, POST sentences.

`mlflow models serve --env-manager local` runs the pyfunc in this venv (it needs the venv's bin/ on PATH for
uvicorn). The pyfunc is also loaded in a fresh process and called with every input form it documents.
"""

from __future__ import annotations

import json
import sys

import mlflow
import pytest

from pipelines.promote import promote
from tests.tag_fixtures import assert_offsets_exact, tiny_model_dir  # noqa: F401 (fixture)
from tests.test_mlflow_server import free_port, http, port_closed, server_env, serving

LOAD_AND_CALL = """
import json, sys, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import mlflow
    model = mlflow.pyfunc.load_model(sys.argv[1])
    text = "Peter visited Germany on Monday ."
    forms = [text, [text], [text.split()], [{"text": text}], [{"tokens": text.split()}], {"text": [text]}]
    import pandas as pd
    forms += [pd.DataFrame({"text": [text]}), pd.DataFrame({"tokens": [text.split()]}), pd.DataFrame([text])]
    outputs = [model.predict(form) for form in forms]
    try:
        model.predict(3)
        refused = None
    except Exception as err:
        refused = f"{type(err).__name__}: {err}"
mine = [str(w.message) for w in caught if "sqlalchemy" not in w.filename.lower() and "noload" not in str(w.message)]
print(json.dumps({"outputs": outputs, "refused": refused, "warnings": mine}))
"""


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


def test_the_logged_pyfunc_takes_every_documented_form_in_a_fresh_process(trained_run, tiny_model_dir):  # noqa: F811
    """Each form gives the record `ner.tag` writes (the Annotator's) and no MLflow warning; others: one error."""
    import subprocess

    from ner.tagging.annotate import Annotator
    from ner.tracking.model_uri import load_folder

    run_id, uri, _ = trained_run
    env = server_env(MLFLOW_TRACKING_URI=uri)
    proc = subprocess.run([sys.executable, "-c", LOAD_AND_CALL, f"runs:/{run_id}/model"], capture_output=True,
                          text=True, env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    annotator = Annotator(load_folder(tiny_model_dir))
    text = "Peter visited Germany on Monday ."
    expected = annotator.annotate([text])
    assert annotator.annotate_tokens([[text.split()]]) == expected  # the tokens rebuild this very text
    assert expected[0]["entities"]
    assert result["outputs"] == [expected] * len(result["outputs"])
    assert result["warnings"] == []
    assert result["refused"].startswith("ValueError: a int cannot be tagged: pass a string, a list of strings")


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
        assert [t for s in first["sentences"] for t in s["tokens"]] == text.split()
        assert_offsets_exact(first)
        assert {(e["text"], e["type"]) for e in first["entities"]} & {("Peter", "PER"), ("Germany", "LOC")}
        assert second["sentences"][0]["tokens"] == ["no", "names", "here"]

        for body in ({"inputs": [{"tokens": ["Peter", "visited", "Bonn", "."]}]}, {"inputs": ["Peter visited Bonn ."]}):
            status, answer = http(f"{base}/invocations", body)
            assert status == 200, answer[:2000]
            (pred,) = json.loads(answer)["predictions"]
            assert pred["text"] == "Peter visited Bonn ." and len(pred["sentences"][0]["tags"]) == 4
            assert_offsets_exact(pred)
    assert port_closed(port), "the model server still listens after it was stopped"
