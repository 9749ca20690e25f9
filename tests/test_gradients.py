"""The gradient profile: what it measures (causality, per-sentence independence) and what it logs."""

from __future__ import annotations

import json
import math

import mlflow
import pytest
import torch
from torch import nn

from ner.data import schemes
from ner.data.corpus import tag_strings
from ner.training.gradients import jacobian_norms, log_gradient_profile, profile_batch, timestep_grad_norms
from ner.training.pipeline import build
from tests.conftest import compose_train


def _tiny(tmp_path, cell: str, bidirectional: bool):
    """A freshly initialised tagger on the tiny corpus and its encoded training split (tags in the train scheme)."""
    cfg = compose_train(tmp_path, f"model.cell={cell}", f"model.bidirectional={bidirectional}")
    data_cfg, corpus, _, featurizer, model = build(cfg)
    gold = tag_strings(corpus["train"])
    tags = [schemes.convert(t, data_cfg.train_scheme) for t in gold]
    return model, featurizer.encode(corpus["train"]["tokens"], tags)


@pytest.fixture
def restore_tracking_uri():
    """This test points MLflow at its own store: put the session's URI back (trained_run's tests rely on it)."""
    before = mlflow.get_tracking_uri()
    yield
    mlflow.set_tracking_uri(before)


@pytest.fixture(scope="module")
def uni_rnn(tmp_path_factory):
    torch.manual_seed(0)
    return _tiny(tmp_path_factory.mktemp("uni"), "rnn", False)


@pytest.fixture(scope="module")
def bi_lstm(tmp_path_factory):
    torch.manual_seed(0)
    return _tiny(tmp_path_factory.mktemp("bi"), "lstm", True)


def test_a_left_to_right_encoder_gets_no_gradient_from_the_future(uni_rnn):
    model, enc = uni_rnn
    batch = enc.batch(profile_batch(enc, size=4))
    steps, norms = jacobian_norms(model, batch)  # (P,), (B, P, T)
    future = steps[:, None] < torch.arange(norms.size(2))[None, :]  # j > t
    assert norms[:, future].abs().max() == 0
    assert norms[:, ~future].max() > 0


def test_a_bidirectional_encoder_does(bi_lstm):
    model, enc = bi_lstm
    batch = enc.batch(profile_batch(enc, size=4))
    steps, norms = jacobian_norms(model, batch)
    future = steps[:, None] < torch.arange(norms.size(2))[None, :]
    assert norms[:, future].max() > 0


def test_one_backward_pass_per_position_equals_brute_force_per_sentence(bi_lstm):
    """Row (t, j) of sentence b in the batch = the gradient computed for that sentence alone, by hand."""
    model, enc = bi_lstm
    index = profile_batch(enc, size=3)
    _, norms = jacobian_norms(model, enc.batch(index))
    model.eval()
    for row, i in enumerate(index):
        single = enc.batch([i])
        features = model.embed(single).detach().requires_grad_(True)
        loss = nn.functional.cross_entropy(
            model.emissions(single, features=features)[0], single.tags[0], reduction="none"
        )
        n = len(enc.forms[i])
        for t in (0, n // 2, n - 1):
            (grad,) = torch.autograd.grad(loss[t], features, retain_graph=True)
            torch.testing.assert_close(norms[row, t, :n], grad[0].norm(dim=1), rtol=1e-4, atol=1e-7)
            assert not norms[row, t, n:].any()  # padding gets no gradient
    model.train()


def test_the_profile_by_distance(uni_rnn, bi_lstm):
    for model, enc in (uni_rnn, bi_lstm):
        model.train()
        batch = enc.batch(profile_batch(enc))
        longest = int(batch.lengths.max())
        profile = timestep_grad_norms(model, batch, max_distance=longest + 2)
        assert profile.shape == (longest + 3,)
        assert torch.isfinite(profile[:longest]).all() and (profile[:longest] > 0).all()
        assert torch.isnan(profile[longest:]).all()  # no pair of tokens is that far apart
        assert model.training  # the measurement runs in eval mode and puts the mode back
        subset = timestep_grad_norms(model, batch, max_distance=longest - 1, positions=4)
        assert torch.isfinite(subset[:2]).all()  # a few positions still cover the short distances


def test_profile_batch_is_fixed_and_long_first(uni_rnn):
    _, enc = uni_rnn
    lengths = [len(f) for f in enc.forms]
    chosen = profile_batch(enc, size=5, min_length=100)  # nothing that long: falls back to the longest
    assert chosen == profile_batch(enc, size=5, min_length=100)
    assert [lengths[i] for i in chosen] == sorted(lengths, reverse=True)[:5]


def test_log_gradient_profile_logs_metrics_a_plot_and_numbers(tmp_path, uni_rnn, restore_tracking_uri):
    model, enc = uni_rnn
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = mlflow.create_experiment("grads", artifact_location=(tmp_path / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=exp) as run:
        log_gradient_profile(model, enc, step=3, max_distance=8)
    client = mlflow.MlflowClient()
    metrics = client.get_run(run.info.run_id).data.metrics
    assert {"gradients/norm_d0", "gradients/norm_d1", "gradients/norm_d5"} <= set(metrics)
    assert "gradients/norm_d10" not in metrics  # beyond max_distance
    assert [m.step for m in client.get_metric_history(run.info.run_id, "gradients/norm_d0")] == [3]
    names = {a.path for a in client.list_artifacts(run.info.run_id, "gradients")}
    assert names == {"gradients/grad_norm_epoch3.png", "gradients/grad_norm_epoch3.json"}
    info = json.loads(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/gradients/grad_norm_epoch3.json"))
    assert info["model"] == "rnn" and len(info["grad_norm"]) == 9
    assert math.isclose(info["grad_norm"][0], metrics["gradients/norm_d0"], rel_tol=1e-6)
