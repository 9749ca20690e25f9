"""Entity-level scores with seqeval's entity readers, on IOB2 tags: over a whole split, or streamed chunk by chunk.

The headline is seqeval's default mode, which reads tags the way conlleval does (so numbers compare with the
papers); strict IOB2 mode is reported beside it, and the gap between the two is the count of predicted
sequences that are not valid IOB2 (a CRF with constrained transitions has none).
"""

from __future__ import annotations

from collections import Counter

from seqeval.metrics import classification_report
from seqeval.scheme import IOB2

from ner.data import schemes


def score(gold: list[list[str]], pred: list[list[str]]) -> dict[str, float]:
    """Micro P/R/F1 (default and strict mode, in %) and per-type F1, all from IOB2 tag strings, plus the number of
    predicted sentences that are not valid IOB2. The same counting as `Scorer`, over one whole split."""
    scorer = Scorer()
    scorer.add(gold, pred)
    out = scorer.scores()
    out["invalid_predicted_sequences"] = float(sum(not schemes.is_valid(seq, "iob2") for seq in pred))
    return out


def report(gold: list[list[str]], pred: list[list[str]]) -> str:
    """seqeval's per-type table in both modes, as text for an artifact."""
    default = classification_report(gold, pred, digits=4, zero_division=0)
    strict = classification_report(gold, pred, digits=4, mode="strict", scheme=IOB2, zero_division=0)
    return f"seqeval default mode (conlleval-compatible)\n{default}\nseqeval strict IOB2 mode\n{strict}"


class Scorer:
    """seqeval's entity counts (default and strict IOB2 mode), summed chunk by chunk: `ner.tag` scores a large
    CoNLL input without holding every tag in memory, and `score` is one chunk. The numbers equal seqeval's
    `precision_recall_fscore_support` (tests/test_metrics.py checks it), to the last bit."""

    def __init__(self) -> None:
        self.counts = {"": Counter(), "_strict": Counter()}  # (type, "tp" | "pred" | "true") -> count
        self.used = False

    def add(self, gold: list[list[str]], pred: list[list[str]]) -> None:
        """Count the entities of a chunk's aligned gold and predicted IOB2 sentences."""
        from seqeval.metrics.sequence_labeling import get_entities

        self.used = True
        for mode, true, guess in (
            ("", set(get_entities(gold)), set(get_entities(pred))),
            ("_strict", _strict_entities(gold), _strict_entities(pred)),
        ):
            counts = self.counts[mode]
            counts.update((e[0], "true") for e in true)
            counts.update((e[0], "pred") for e in guess)
            counts.update((e[0], "tp") for e in true & guess)

    def scores(self) -> dict[str, float]:
        """precision/recall/f1 (default mode), the same with _strict, and f1_<TYPE> (default mode), in %."""
        out: dict[str, float] = {}
        for mode, counts in self.counts.items():
            total = {k: sum(v for (_, kind), v in counts.items() if kind == k) for k in ("tp", "pred", "true")}
            p, r, f = _prf(total["tp"], total["pred"], total["true"])
            out.update({f"precision{mode}": p, f"recall{mode}": r, f"f1{mode}": f})
        types = sorted({typ for typ, _ in self.counts[""]})
        for typ in types:
            c = self.counts[""]
            out[f"f1_{typ}"] = _prf(c[(typ, "tp")], c[(typ, "pred")], c[(typ, "true")])[2]
        return out


def _strict_entities(sentences: list[list[str]]) -> set[tuple]:
    """(type, sentence, start, end) of the entities seqeval's strict IOB2 mode sees."""
    from seqeval.scheme import IOB2, Entities

    return {(e.tag, e.sent_id, e.start, e.end) for sent in Entities(sentences, IOB2).entities for e in sent}


def _prf(tp: int, pred: int, true: int) -> tuple[float, float, float]:
    p = tp / pred if pred else 0.0
    r = tp / true if true else 0.0
    return 100 * p, 100 * r, 100 * (2 * p * r / (p + r) if p + r else 0.0)
