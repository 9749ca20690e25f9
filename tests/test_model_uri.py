"""Every model URI form resolves, from a real MLflow store in tmp_path, to the same tagger; bad ones say why."""

from __future__ import annotations

import shutil

import mlflow
import numpy as np
import pytest
import torch

from ner.data.batching import Featurizer
from ner.data.vocab import Vocab
from ner.model.tagger import ModelConfig, Tagger
from ner.tagging.annotate import Annotator
from ner.tracking import model_uri
from tests.tag_fixtures import tiny_model_dir  # noqa: F401 (fixture)

TEXT = ["Angela Merkel visited Paris on Monday .", "Peter left Reuters ."]


def _same_weights(a: Tagger, b: Tagger) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_every_uri_form_loads_the_same_tagger(trained_run, tiny_model_dir, tmp_path):  # noqa: F811
    run_id, uri, _ = trained_run
    mlflow.MlflowClient(uri).set_registered_model_alias("tiny-ner", "champion", "1")
    downloaded = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model", dst_path=str(tmp_path / "dl"))
    reference = model_uri.load_folder(tiny_model_dir)
    forms = [
        f"runs:/{run_id}/model",
        "models:/tiny-ner/1",
        "models:/tiny-ner@champion",
        "best:smoke",  # the experiment of the smoke preset that trained_run uses
        str(tiny_model_dir),  # a folder written by Tagger.save
        downloaded,  # a downloaded MLflow model folder (artifacts/tagger inside)
    ]
    before = mlflow.get_tracking_uri()
    for form in forms:
        tagger = model_uri.load(form, tracking_uri=uri)
        assert not tagger.training
        assert _same_weights(tagger, reference), form
    assert mlflow.get_tracking_uri() == before  # the store is pointed at only while loading
    records = Annotator(reference).annotate(TEXT)
    assert {e["text"] for e in records[0]["entities"]} >= {"Angela Merkel", "Paris"}


def test_best_picks_the_highest_best_dev_f1(trained_run, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    try:
        exp = mlflow.create_experiment("pick", artifact_location=(tmp_path / "artifacts").as_uri())
        ids = {}
        for name, f1 in (("low", 80.0), ("high", 90.0), ("none", None)):
            with mlflow.start_run(experiment_id=exp, run_name=name) as run:
                if f1 is not None:
                    mlflow.log_metric("best_dev_f1", f1)
                    mlflow.log_metric("dev_f1", 99.0 - f1)  # per-epoch curve: must not be what is ranked
                ids[name] = run.info.run_id
        assert model_uri.best_run_uri("pick", uri) == f"runs:/{ids['high']}/model"
        old = mlflow.create_experiment("old-runs", artifact_location=(tmp_path / "old").as_uri())
        for name, f1 in (("a", 70.0), ("b", 75.0)):  # runs from before best_dev_f1: ranked by dev_f1
            with mlflow.start_run(experiment_id=old, run_name=name) as run:
                mlflow.log_metric("dev_f1", f1)
                ids[name] = run.info.run_id
        assert model_uri.best_run_uri("old-runs", uri) == f"runs:/{ids['b']}/model"
    finally:
        mlflow.set_tracking_uri(trained_run[1])


def test_the_default_store_is_the_project_store_in_the_working_directory(tmp_path, monkeypatch):
    from mlflow.tracking import is_tracking_uri_set

    monkeypatch.chdir(tmp_path)
    before = (is_tracking_uri_set(), mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    with pytest.raises(model_uri.ModelError, match=f"no experiment 'ner' in sqlite:///{tmp_path}/mlruns/mlflow.db"):
        model_uri.load("best:")
    assert (is_tracking_uri_set(), mlflow.get_tracking_uri(), mlflow.get_registry_uri()) == before  # nothing pinned


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("runs:/0123456789abcdef/model", "Run with id=0123456789abcdef not found"),
        ("models:/no-such-model/1", "no-such-model"),
        ("models:/tiny-ner/99", "version=99"),
        ("models:/tiny-ner@no-such-alias", "no-such-alias"),
        ("best:no-such-experiment", "no experiment 'no-such-experiment'"),
        ("/no/such/folder", "neither an existing folder nor a runs:/"),
        ("", "no model given"),
    ],
)
def test_bad_uris_raise_a_model_error_that_says_what_is_wrong(trained_run, uri, message):
    with pytest.raises(model_uri.ModelError, match=message):
        model_uri.load(uri, tracking_uri=trained_run[1])


def test_a_folder_without_a_tagger_is_refused(tmp_path):
    (tmp_path / "tagger.json").write_text("{}")
    with pytest.raises(model_uri.ModelError, match="holds no tagger"):
        model_uri.load(str(tmp_path))
    (tmp_path / "weights.pt").write_bytes(b"not torch")
    with pytest.raises(model_uri.ModelError, match="not a loadable tagger"):
        model_uri.load(str(tmp_path))


def test_a_tagger_trained_with_pretrained_vectors_loads(tmp_path):
    """The vectors' size (here 7) replaces ModelConfig.word_dim (100) in the saved model: the loader copes."""
    featurizer = Featurizer(Vocab(["<pad>", "<unk>", "paris"]), Vocab(["<pad>", "<unk>", "a"]), Vocab(["O", "S-LOC"]))
    cfg = ModelConfig(hidden_size=4, char_hidden=3, char_dim=3, case_dim=2, word_dim=100)
    vectors = np.random.default_rng(0).normal(size=(3, 7)).astype(np.float32)
    Tagger(cfg, featurizer, "bioes", vectors).save(tmp_path / "tagger")
    shutil.copytree(tmp_path / "tagger", tmp_path / "copy")
    tagger = model_uri.load(str(tmp_path / "copy"))
    assert tagger.word_embed.embedding_dim == 7
    assert len(Annotator(tagger).tag_tokens([["Paris"]])[0]) == 1
