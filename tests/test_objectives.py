"""The training objectives past the gold tags: distillation targets (CRF marginals), the soft-target loss, the
language-model co-training head, and training on train + dev; each checked against brute force or a real run."""

from __future__ import annotations

import itertools

import mlflow
import pytest
import torch
from conftest import compose_train

from ner.config import ConfigError
from ner.data import schemes
from ner.model.crf import CRF, allowed_transitions
from ner.model.tagger import Tagger
from ner.tracking import model_uri
from ner.training.objectives import LanguageModel, Objective, gold_targets, teacher_targets
from ner.training.pipeline import RunConfig, train

LABELS = schemes.labels_for(["LOC", "PER"], "bioes")  # 9 tags


def random_crf(seed: int, constrained: bool = True) -> CRF:
    torch.manual_seed(seed)
    crf = CRF(len(LABELS), allowed_transitions("bioes", LABELS) if constrained else None)
    for p in crf.parameters():
        torch.nn.init.normal_(p)
    return crf


def sequence_log_probs(crf: CRF, emissions: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every tag sequence of length n (P, n) and its log-probability (P,), by enumeration."""
    start, end, trans = crf._scores()
    paths = torch.tensor(list(itertools.product(range(emissions.size(1)), repeat=n)))
    score = start[paths[:, 0]] + end[paths[:, -1]] + emissions[torch.arange(n), paths].sum(1)
    if n > 1:
        score = score + trans[paths[:, :-1], paths[:, 1:]].sum(1)
    return paths, score - torch.logsumexp(score, 0)


def padded_batch(lengths: list[int], seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    emissions = torch.randn(len(lengths), max(lengths), len(LABELS)) * 2
    mask = torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]
    return emissions, mask


@pytest.mark.parametrize("constrained", [False, True])
def test_marginals_equal_brute_force_enumeration(constrained):
    crf = random_crf(0, constrained)
    lengths = [3, 1, 2]
    emissions, mask = padded_batch(lengths)
    unary, pairs = crf.marginals(emissions, mask)
    for b, n in enumerate(lengths):
        with torch.no_grad():
            paths, log_p = sequence_log_probs(crf, emissions[b], n)
        p = log_p.exp()
        want_unary = torch.stack([torch.zeros(len(LABELS)).index_add(0, paths[:, t], p) for t in range(n)])
        assert torch.allclose(unary[b, :n], want_unary, atol=1e-5)
        assert torch.all(unary[b, n:] == 0)
        want_pairs = torch.zeros(len(LABELS), len(LABELS))
        for t in range(1, n):
            want_pairs.index_put_((paths[:, t - 1], paths[:, t]), p, accumulate=True)
        assert torch.allclose(pairs[b], want_pairs, atol=1e-5)


def test_a_teachers_temperature_divides_every_score_and_softens_its_marginals():
    crf = random_crf(0, constrained=False)
    emissions, mask = padded_batch([3, 1, 2])
    hot, _ = crf.marginals(emissions, mask, temperature=1.0)
    soft, soft_pairs = crf.marginals(emissions, mask, temperature=2.0)
    with torch.no_grad():
        for param in crf.parameters():
            param.div_(2.0)
    want, want_pairs = crf.marginals(emissions / 2.0, mask)
    assert torch.allclose(soft, want, atol=1e-6) and torch.allclose(soft_pairs, want_pairs, atol=1e-6)

    def entropy(p):
        return -(p[mask] * p[mask].clamp_min(1e-12).log()).sum()

    assert entropy(soft) > entropy(hot)


def test_soft_nll_of_the_gold_path_is_the_nll():
    crf = random_crf(1)
    emissions, mask = padded_batch([4, 2, 3], seed=2)
    tags = crf.decode(emissions, mask)  # an allowed path, so the constrained NLL is finite
    unary, pairs = gold_targets(tags, mask, len(LABELS))
    assert torch.allclose(crf.soft_nll(emissions, mask, unary, pairs), crf.nll(emissions, tags, mask), atol=1e-4)


def test_soft_nll_is_the_cross_entropy_to_the_teachers_sequence_distribution():
    teacher, student = random_crf(3), random_crf(4)
    lengths = [3, 2]
    emissions, mask = padded_batch(lengths, seed=5)
    teacher_emissions = emissions + torch.randn_like(emissions)
    unary, pairs = teacher.marginals(teacher_emissions, mask)
    emissions.requires_grad_(True)
    loss = student.soft_nll(emissions, mask, unary, pairs)
    for b, n in enumerate(lengths):
        with torch.no_grad():
            _, log_q = sequence_log_probs(teacher, teacher_emissions[b], n)
        _, log_p = sequence_log_probs(student, emissions[b], n)
        assert torch.allclose(loss[b], -(log_q.exp() * log_p).sum(), atol=1e-3)
    loss.sum().backward()  # and it trains: gradients reach the student's scores and transitions
    assert emissions.grad.abs().sum() > 0 and student.transitions.grad.abs().sum() > 0


def test_targets_mix_gold_and_teachers_and_training_without_extras_is_the_taggers_loss(trained_run):
    run_id, uri, _ = trained_run
    model = model_uri.load(f"runs:/{run_id}/model", uri).train()
    sentences = [["John", "lives", "in", "Berlin"], ["Paris"]]
    labels = model.featurizer.labels.itos
    targets = teacher_targets(model, sentences, labels)
    assert targets.unary.shape == (5, len(labels)) and targets.pairs.shape == (2, len(labels), len(labels))
    assert torch.allclose(targets.unary.sum(1), torch.ones(5), atol=1e-5)
    assert torch.allclose(targets.pairs.sum((1, 2)), torch.tensor([3.0, 0.0]), atol=1e-4)  # n - 1 transitions
    reversed_labels = labels[::-1]  # a student whose tags are in another order gets them in its own order
    again = teacher_targets(model, sentences, reversed_labels)
    assert torch.allclose(again.unary, targets.unary.flip(1)) and torch.allclose(again.pairs, targets.pairs.flip(1, 2))
    with pytest.raises(ValueError, match="not the student's"):
        teacher_targets(model, sentences, [*labels, "S-NEW"])
    encoded = model.featurizer.encode(sentences, [["B-PER", "O", "O", "B-LOC"], ["B-LOC"]])
    batch = encoded.batch([0, 1])
    torch.manual_seed(0)
    plain = Objective(model)(batch)
    torch.manual_seed(0)
    assert torch.equal(plain, model.loss(batch))  # the default path: exactly the tagger's own loss
    torch.manual_seed(0)
    mixed = Objective(model, targets, teacher_weight=1.0)(batch)
    assert torch.isfinite(mixed) and not torch.equal(mixed, plain)


def test_the_language_model_predicts_neighbouring_words_by_frequency_class():
    word_ids = torch.tensor([5, 5, 5, 7, 7, 9])  # 5 the most frequent, then 7; vocab 2 leaves 9 as "other"
    lm = LanguageModel(hidden=4, directions=2, word_ids=word_ids, vocab=2)
    assert lm._classes(torch.tensor([5, 7, 9, 3, 99])).tolist() == [2, 3, 1, 1, 1]
    states = torch.randn(2, 3, 8, requires_grad=True)
    words = torch.tensor([[5, 7, 9], [7, 5, 0]])
    mask = words > 0
    loss = lm(states, words, mask)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert states.grad[1, 2].abs().sum() == 0  # padding positions predict nothing
    assert states.grad[0].abs().sum() > 0


def test_train_with_dev_has_no_dev_score_and_a_co_trained_lm_is_not_saved(tmp_path):
    with pytest.raises(ConfigError, match="trainer.patience=0"):
        RunConfig.of(compose_train(tmp_path, "trainer.train_with_dev=true", "trainer.patience=3"))
    cfg = compose_train(tmp_path, "trainer.train_with_dev=true", "trainer.patience=0", "trainer.lm_weight=0.5")
    final = train(cfg)
    assert "best_dev_f1" not in final and "test_f1" in final
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(final["run_id"])
    assert run.data.tags["train_with_dev"] == "true"
    assert not any(k.startswith(("dev/", "best_dev")) for k in run.data.metrics)  # never ranked by `best:`
    assert int(run.data.params["data_size.train.sentences"]) > 0
    model = model_uri.load(f"runs:/{final['run_id']}/model", f"sqlite:///{tmp_path / 'mlflow.db'}")
    plain = Tagger(model.cfg, model.featurizer, model.scheme)
    assert model.state_dict().keys() == plain.state_dict().keys()  # the LM head stayed in training


def test_a_student_learns_from_a_teachers_marginals(tmp_path, trained_run):
    run_id, uri, _ = trained_run
    teacher = model_uri.load(f"runs:/{run_id}/model", uri)
    teacher.save(tmp_path / "teacher")
    teachers = f"trainer.teachers=[{tmp_path / 'teacher'}]"
    final = train(compose_train(tmp_path, teachers, "trainer.teacher_weight=0.7", "trainer.teacher_temperature=2"))
    assert final["test_f1"] >= 0
    with pytest.raises(ConfigError, match=r"trainer.teacher_temperature=0"):
        train(compose_train(tmp_path, teachers, "trainer.teacher_temperature=0"))
    with pytest.raises(ConfigError, match=r"trainer.teachers\[0\]"):
        train(compose_train(tmp_path, f"trainer.teachers=[{tmp_path / 'missing'}]"))


def test_the_matched_temperature_makes_the_teachers_as_unsure_as_asked(trained_run):
    from benchmarks.teacher_temperature import entropy, matching

    run_id, uri, _ = trained_run
    teacher = model_uri.load(f"runs:/{run_id}/model", uri).eval()
    sentences = [["John", "lives", "in", "Berlin"], ["Paris", "is", "big"], ["EU", "rejects", "German", "call"]]
    cold, warm = entropy(teacher, sentences, 1.0)[0], entropy(teacher, sentences, 4.0)[0]
    assert cold < warm
    want = (cold + warm) / 2
    t = matching(teacher, sentences, want, 1.0, 4.0, steps=20)
    assert 1.0 < t < 4.0 and abs(entropy(teacher, sentences, t)[0] - want) < 1e-3 * (warm - cold) + 1e-6
