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


def test_best_picks_the_highest_best_dev_f1_among_runs_with_a_model(trained_run, tmp_path):
    """`best:` and `pipelines.promote` share `model_uri.best_run`: a run without a logged model never wins."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)

    def make_runs(experiment: str, runs) -> dict[str, str]:
        exp = mlflow.create_experiment(experiment, artifact_location=(tmp_path / experiment).as_uri())
        ids = {}
        for name, metrics, with_model in runs:
            with mlflow.start_run(experiment_id=exp, run_name=name) as run:
                mlflow.log_metrics(metrics)
                if with_model:
                    mlflow.initialize_logged_model(name="model", source_run_id=run.info.run_id, experiment_id=exp)
                ids[name] = run.info.run_id
        return ids

    try:
        ids = make_runs(
            "pick",
            [
                ("low", {"dev/f1": 80.0, "epoch/dev_f1": 19.0}, True),
                ("high", {"dev/f1": 90.0, "epoch/dev_f1": 9.0}, True),  # the per-epoch curve is not ranked
                ("higher-no-model", {"dev/f1": 95.0}, False),
                ("none", {}, True),
            ],
        )
        assert model_uri.best_run_uri("pick", uri) == f"runs:/{ids['high']}/model"
        assert model_uri.best_run("pick").info.run_id == ids["high"]
        ids = make_runs("old-runs", [("a", {"dev_f1": 70.0}, True), ("b", {"dev_f1": 75.0}, True)])
        assert model_uri.best_run_uri("old-runs", uri) == f"runs:/{ids['b']}/model"  # before best_dev_f1: dev_f1
        ids = make_runs("older-names", [("a", {"best_dev_f1": 70.0}, True), ("b", {"best_dev_f1": 65.0}, True)])
        assert model_uri.best_run_uri("older-names", uri) == f"runs:/{ids['a']}/model"  # before dev/f1
        make_runs("no-models", [("a", {"best_dev_f1": 70.0}, False)])
        with pytest.raises(model_uri.ModelError, match="has a logged model"):
            model_uri.best_run_uri("no-models", uri)
    finally:
        mlflow.set_tracking_uri(trained_run[1])


def test_the_default_store_is_the_project_store_in_the_working_directory(tmp_path, monkeypatch):
    from mlflow.tracking import is_tracking_uri_set

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = (is_tracking_uri_set(), mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    with pytest.raises(model_uri.ModelError, match=f"no experiment 'ner' in sqlite:///{tmp_path}/mlruns/mlflow.db"):
        model_uri.load("best:")
    assert (is_tracking_uri_set(), mlflow.get_tracking_uri(), mlflow.get_registry_uri()) == before  # nothing pinned


def test_both_apps_follow_mlflow_tracking_uri_when_no_store_is_given(tmp_path, monkeypatch):
    """The order: the explicit option, then MLFLOW_TRACKING_URI, then ./mlruns (which must stay untouched here)."""
    from ner.training.pipeline import train
    from tests.conftest import compose_train
    from tests.tag_fixtures import run_tag

    store = f"sqlite:///{tmp_path / 'elsewhere' / 'mlflow.db'}"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    before = mlflow.get_tracking_uri()
    try:
        result = train(compose_train(tmp_path, "tracking.uri=null", "trainer.max_epochs=1", "tracking.experiment=env"))
        assert mlflow.MlflowClient(store).get_run(result["run_id"]).info.status == "FINISHED"
        assert not (tmp_path / "mlruns" / "mlflow.db").exists()  # (./mlruns/checkpoints is where checkpoints go)
        (tmp_path / "in.txt").write_text("Peter visited Paris .\n", encoding="utf-8")
        for model in (f"runs:/{result['run_id']}/model", "best:env"):
            summary = run_tag(model=model, input=tmp_path / "in.txt", output=tmp_path / "out.jsonl")
            assert summary["documents"] == 1
        assert not (tmp_path / "mlruns" / "mlflow.db").exists() and not (tmp_path / "mlflow.db").exists()
        with pytest.raises(model_uri.ModelError, match="no experiment 'env' in sqlite:///"):  # the option wins
            model_uri.load("best:env", f"sqlite:///{tmp_path / 'other.db'}")
    finally:
        mlflow.set_tracking_uri(before)  # train() pointed MLflow at the store; the other tests expect theirs


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
