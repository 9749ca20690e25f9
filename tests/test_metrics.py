"""Scores: our counting equals seqeval's own functions, to the last bit, whole or streamed in chunks."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from seqeval.metrics import sequence_labeling, v1
from seqeval.scheme import IOB2

from ner.evaluation.metrics import Scorer, score

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG", "B-ORG"]  # draws include invalid IOB2 (O I-PER)
sentence = st.lists(st.sampled_from(TAGS), min_size=1, max_size=10)


@st.composite
def gold_and_pred(draw):
    gold = draw(st.lists(sentence, min_size=1, max_size=12))
    pred = [draw(st.lists(st.sampled_from(TAGS), min_size=len(s), max_size=len(s))) for s in gold]
    return gold, pred


def seqeval_scores(gold, pred) -> dict[str, float]:
    out = {}
    default = sequence_labeling.precision_recall_fscore_support(gold, pred, average="micro", zero_division=0)
    strict = v1.precision_recall_fscore_support(gold, pred, average="micro", zero_division=0, mode="strict",
                                                scheme=IOB2)  # fmt: skip
    for suffix, (p, r, f, _) in (("", default), ("_strict", strict)):
        out.update({f"precision{suffix}": 100 * p, f"recall{suffix}": 100 * r, f"f1{suffix}": 100 * f})
    names = sorted({e[0] for seqs in (gold, pred) for e in sequence_labeling.get_entities(seqs)})
    if names:
        f = sequence_labeling.precision_recall_fscore_support(gold, pred, average=None, zero_division=0)[2]
        out.update({f"f1_{n}": 100 * float(v) for n, v in zip(names, f, strict=True)})
    return out


@settings(max_examples=200, deadline=None)
@given(gold_and_pred())
def test_scores_equal_seqeval_exactly(data):
    gold, pred = data
    ours = score(gold, pred)
    invalid = ours.pop("invalid_predicted_sequences")
    assert ours == {k: float(v) for k, v in seqeval_scores(gold, pred).items()}
    assert invalid == sum(not _valid_iob2(s) for s in pred)


def _valid_iob2(tags: list[str]) -> bool:
    """Every I-X follows a B-X or an I-X."""
    return all(not t.startswith("I-") or (i and tags[i - 1][2:] == t[2:]) for i, t in enumerate(tags))


@settings(max_examples=100, deadline=None)
@given(gold_and_pred(), st.integers(1, 5))
def test_streamed_chunks_score_like_the_whole(data, chunk):
    gold, pred = data
    scorer = Scorer()
    for i in range(0, len(gold), chunk):
        scorer.add(gold[i : i + chunk], pred[i : i + chunk])
    whole = score(gold, pred)
    whole.pop("invalid_predicted_sequences")
    assert scorer.scores() == whole
