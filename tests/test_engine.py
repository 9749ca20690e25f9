"""The inference engine against the plainest possible path: each sentence (or each document-context run) alone
through `Tagger.decode`, mapped to IOB2 with `schemes.convert`. Models are trained on the tiny corpus by the real
training pipeline, one per head, tag scheme and context setting, so the scores are those of a model that learned
something (random weights hide ties and invalid sequences)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY, compose_train

from ner.data import schemes
from ner.data.corpus import DataConfig, Sentences, load_corpus
from ner.model.engine import Engine
from ner.model.ensemble import Averaged
from ner.model.tagger import Tagger
from ner.tracking import model_uri

VARIANTS = {
    "crf-bioes": (),
    "softmax-bioes": ("model.head=softmax",),
    "softmax-iob2": ("model.head=softmax", "data.train_scheme=iob2"),
    "crf-iob2": ("data.train_scheme=iob2",),
    "crf-context": ("model.context_tokens=30",),
}


def reference_tags(model: Tagger, sentences: list[list[str]], documents: list[int] | None = None) -> list[list[str]]:
    """IOB2 tags from `Tagger.decode` on one sequence at a time: a sentence, or a run of a document's sentences
    when the model reads context (split back per sentence)."""
    encoded = model.featurizer.encode(sentences, documents=documents)
    runs = [range(i, i + 1) for i in range(len(sentences))]
    if model.cfg.context_tokens and documents is not None:
        encoded, runs = encoded.in_context(model.cfg.context_tokens)
    itos = model.featurizer.labels.itos
    out: list[list[str]] = []
    for i, run in enumerate(runs):
        ids = model.decode(encoded.batch([i]))[0] if encoded.forms[i] else []
        for s in run:
            n = len(sentences[s])
            out.append(schemes.convert([itos[t] for t in ids[:n]], "iob2"))
            ids = ids[n:]
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, tuple[Tagger, Sentences]]:
    """A trained tagger per variant (through `ner.training.pipeline.train`, loaded from its logged model) and the
    test split of the tiny corpus."""
    from ner.training.pipeline import train

    out = {}
    for name, overrides in VARIANTS.items():
        tmp = tmp_path_factory.mktemp(name)
        result = train(compose_train(tmp, "trainer.max_epochs=12", "trainer.lr=0.05", *overrides))
        model = model_uri.load(f"runs:/{result['run_id']}/model", f"sqlite:///{tmp / 'mlflow.db'}")
        corpus, _ = load_corpus(DataConfig(path=str(TINY), cache_dir=str(tmp / "cache")))
        out[name] = (model, Sentences.of(corpus["test"]))
    return out


@pytest.mark.parametrize("name", VARIANTS)
def test_the_engine_tags_like_each_sentence_decoded_alone(trained, name):
    model, test = trained[name]
    engine = Engine(model, batch_size=7, max_tokens=120)  # small batches: many buckets, padding, a split batch
    expected = reference_tags(model, test.tokens, test.documents)
    assert engine.predict(test.tokens, test.documents) == expected
    assert sum(t != "O" for seq in expected for t in seq) > 10  # the model tags entities: the check has content
    sentences = [*test.tokens[:5], [], test.tokens[5]]  # an empty sentence gets no tags and moves nothing
    assert engine.predict(sentences) == reference_tags(model, sentences)


def test_a_softmax_model_emits_invalid_sequences_that_are_read_like_conlleval(trained):
    """The case the numpy fast path must hand to `schemes.convert`: without it the tags would differ."""
    model, test = trained["softmax-bioes"]
    itos = model.featurizer.labels.itos
    raw = [[itos[i] for i in model.decode(model.featurizer.encode([s]).batch([0]))[0]] for s in test.tokens]
    assert any(not schemes.is_valid(seq, "bioes") for seq in raw)


def test_context_changes_tags_only_through_the_neighbouring_sentences(trained):
    model, test = trained["crf-context"]
    engine = Engine(model)
    alone = engine.predict(test.tokens)  # no documents: every sentence read alone
    assert alone == [reference_tags(model, [s])[0] for s in test.tokens]
    assert engine.predict(test.tokens, test.documents) == reference_tags(model, test.tokens, test.documents)


@pytest.mark.parametrize("name", ["crf-bioes", "softmax-iob2"])
def test_bf16_differs_from_fp32_only_on_a_few_near_ties(trained, name):
    model, test = trained[name]
    engine = Engine(model)
    fp32 = engine.predict(test.tokens, test.documents)
    bf16 = engine.predict(test.tokens, test.documents, precision="bf16")
    tokens = sum(map(len, fp32))
    differ = sum(a != b for x, y in zip(fp32, bf16, strict=True) for a, b in zip(x, y, strict=True))
    assert [len(s) for s in bf16] == [len(s) for s in fp32]
    assert differ <= max(2, 0.01 * tokens), f"{differ} of {tokens} tokens changed in bf16"


def test_bf16_weights_follow_the_model_and_training_never_sees_them(trained):
    model, test = trained["crf-bioes"]
    engine = Engine(model)
    before = engine.predict(test.tokens, precision="bf16")
    assert model._low_precision is not None
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the copy is not a parameter
    assert not any(k.startswith("_low") for k in model.state_dict())
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.rnn.weight_hh_l0.mul_(0.0)  # an in-place update, as an optimiser step makes
    after = engine.predict(test.tokens, precision="bf16")
    assert after != before  # the bf16 copy was remade from the changed weights
    model.load_state_dict(saved)
    assert engine.predict(test.tokens, precision="bf16") == before


def test_training_mode_is_restored_after_a_call(trained):
    model, test = trained["crf-bioes"]
    model.train()
    try:
        first = Engine(model).predict(test.tokens)
        assert model.training
        assert Engine(model).predict(test.tokens) == first  # no dropout inside the engine
    finally:
        model.eval()


def test_an_ensemble_of_copies_of_one_model_tags_like_that_model(trained):
    model, test = trained["crf-bioes"]
    single = Engine(model).predict(test.tokens, test.documents)
    assert Engine(Averaged([model])).predict(test.tokens, test.documents) == single
    assert Engine(Averaged([model, model])).predict(test.tokens, test.documents) == single
    other, _ = trained["crf-iob2"]
    with pytest.raises(ValueError, match="cannot be averaged"):
        Averaged([model, other])


def test_strict_mode_scores_the_softmax_models_own_sequences_and_counts_the_invalid_ones(trained):
    from ner.evaluation import metrics

    model, test = trained["softmax-bioes"]
    engine = Engine(model)
    tagged = engine.tag_sentences(test.tokens, test.documents)
    pred, own = tagged.tags(engine.labels), tagged.tags(engine.labels, own=True)
    assert pred == engine.predict(test.tokens, test.documents)  # what is output: read the conlleval way
    itos = model.featurizer.labels.itos
    raw = [[itos[i] for i in model.decode(model.featurizer.encode([s]).batch([0]))[0]] for s in test.tokens]
    assert tagged.invalid.tolist() == [i for i, seq in enumerate(raw) if not schemes.is_valid(seq, "bioes")]
    assert own == [
        [schemes.split_tag(t)[1] and f"{'B' if t[0] in 'BS' else 'I'}-{t[2:]}" or "O" for t in seq] for seq in raw
    ]  # label by label, never repaired
    scores = metrics.score(test.gold, pred, own, invalid=len(tagged.invalid))
    assert scores["invalid_predicted_sequences"] > 0
    assert scores["f1_strict"] != scores["f1"]


def test_the_constrained_crf_has_no_invalid_sequence_so_both_modes_agree(trained):
    from ner.evaluation import metrics

    for name in ("crf-bioes", "crf-iob2", "crf-context"):
        model, test = trained[name]
        engine = Engine(model)
        tagged = engine.tag_sentences(test.tokens, test.documents)
        assert len(tagged.invalid) == 0
        scores = metrics.score(test.gold, tagged.tags(engine.labels), tagged.tags(engine.labels, own=True), 0)
        assert scores["f1_strict"] == scores["f1"]


@pytest.mark.parametrize("name", VARIANTS)
def test_every_entity_gets_a_score_between_0_and_1_and_scores_change_no_tag(trained, name):
    model, test = trained[name]
    engine = Engine(model, batch_size=7, max_tokens=120)
    plain = engine.tag_sentences(test.tokens, test.documents)
    scored = engine.tag_sentences(test.tokens, test.documents, scores=True)
    assert (scored.iob2 == plain.iob2).all() and (scored.first == plain.first).all()
    assert len(scored.score) == len(scored.first) > 10
    assert ((scored.score >= 0) & (scored.score <= 1)).all()
    assert scored.score.std() > 0.01  # scores tell entities apart
    cut = float(np.median(scored.score))
    kept = scored.at_least(cut, engine.labels)
    assert (kept.score >= cut).all() and len(kept.first) == int((scored.score >= cut).sum()) < len(scored.first)
    dropped = [(a, b) for a, b, s in zip(scored.first, scored.stop, scored.score, strict=True) if s < cut]
    assert all((kept.iob2[a:b] == engine.labels.iob2_id["O"]).all() for a, b in dropped)


def test_calibration_lowers_the_dev_nll_and_the_saved_model_keeps_its_temperature(trained, tmp_path):
    from ner.evaluation.calibration import fit_temperature

    model, test = trained["crf-bioes"]
    engine = Engine(model)
    temperature = fit_temperature(engine, test.tokens, test.gold, test.documents)
    label_id = model.featurizer.labels.stoi
    gold = [[label_id[t] for t in schemes.convert(g, "bioes")] for g in test.gold]

    def nll(t: float) -> float:
        total = 0.0
        for positions, emissions, mask in engine.emissions(test.tokens, test.documents):
            flat = torch.tensor([t_ for seq in gold for t_ in seq])[positions]
            tags = torch.zeros(mask.shape, dtype=torch.long)
            tags[mask] = flat
            total += float(model.chain.nll(emissions, tags, mask, temperature=t).sum())
        return total

    assert nll(temperature) <= min(nll(1.0), nll(temperature * 1.3), nll(temperature / 1.3)) + 1e-6
    model.temperature = temperature
    try:
        model.save(tmp_path / "tagger")
        assert Tagger.load(tmp_path / "tagger").temperature == pytest.approx(temperature)
        before = Engine(Tagger.load(tmp_path / "tagger")).tag_sentences(test.tokens, scores=True).score
        assert (before == Engine(model).tag_sentences(test.tokens, scores=True).score).all()  # applied when tagging
    finally:
        model.temperature = 1.0
