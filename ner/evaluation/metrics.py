"""Entity-level scores with seqeval's entity readers, on IOB2 tags: over a whole split, or streamed chunk by chunk.

Two modes, two inputs (README, "What the scores count"):

- default (the headline): seqeval's default mode, which reads tags the way conlleval does, on the tags as the
  project outputs them: a sequence the model's scheme forbids (only a softmax head produces one) is read the
  conlleval way, e.g. `O I-PER` is a PER entity. This is the number papers report.
- strict: seqeval's strict IOB2 mode on the model's own tags, mapped label by label to IOB2 (BIOES E- -> I-,
  S- -> B-) and never repaired: an entity counts only if the model wrote it validly. With the constrained CRF
  both modes agree (it cannot write an invalid sequence); with a softmax head strict is lower, and
  `invalid_predicted_sequences` counts the sentences whose tags the model's scheme forbids.
"""

from __future__ import annotations

from collections import Counter

from ner.data import schemes


def score(
    gold: list[list[str]], pred: list[list[str]], own: list[list[str]] | None = None, invalid: int | None = None
) -> dict[str, float]:
    """Micro P/R/F1 in %: default mode on `pred`, strict mode on `own` (the model's unrepaired tags; default
    `pred`), per-type F1 (default mode), and `invalid_predicted_sequences`: `invalid` when the caller knows it
    (the engine counts what the model's own scheme forbids), else the sentences of `own` that are not valid IOB2."""
    own = pred if own is None else own
    scorer = Scorer()
    scorer.add(gold, pred, own)
    out = scorer.scores()
    if invalid is None:
        invalid = sum(not schemes.is_valid(seq, "iob2") for seq in own)
    out["invalid_predicted_sequences"] = float(invalid)
    return out


def report(gold: list[list[str]], pred: list[list[str]], own: list[list[str]] | None = None) -> str:
    """Per-type precision, recall, F1 (in %) and support in both modes, as a Markdown table for an artifact."""
    scorer = Scorer()
    scorer.add(gold, pred, own)
    return scorer.table()


class Scorer:
    """seqeval's entity counts (default and strict IOB2 mode), summed chunk by chunk: `ner.tag` scores a large
    CoNLL input without holding every tag in memory, and `score` is one chunk. The numbers equal seqeval's
    `precision_recall_fscore_support` (tests/test_metrics.py checks it), to the last bit."""

    def __init__(self) -> None:
        self.counts = {"": Counter(), "_strict": Counter()}  # (type, "tp" | "pred" | "true") -> count
        self.used = False

    def add(self, gold: list[list[str]], pred: list[list[str]], own: list[list[str]] | None = None) -> None:
        """Count the entities of a chunk's aligned gold and predicted IOB2 sentences (`own`: see `score`)."""
        from seqeval.metrics.sequence_labeling import get_entities

        self.used = True
        for mode, true, guess in (
            ("", set(get_entities(gold)), set(get_entities(pred))),
            ("_strict", _strict_entities(gold), _strict_entities(pred if own is None else own)),
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

    def table(self) -> str:
        """Markdown: per type and micro average, P/R/F1 in % and the gold count, default then strict mode."""
        lines = ["| mode | type | precision | recall | f1 | gold entities |", "|---|---|---|---|---|---|"]
        for mode, name in (("", "default"), ("_strict", "strict")):
            counts = self.counts[mode]
            for typ in [*sorted({t for t, _ in counts}), None]:
                tp, pred, true = (
                    counts[(typ, kind)] if typ else sum(v for (_, k), v in counts.items() if k == kind)
                    for kind in ("tp", "pred", "true")
                )
                p, r, f = _prf(tp, pred, true)
                lines.append(f"| {name} | {typ or 'all (micro)'} | {p:.2f} | {r:.2f} | {f:.2f} | {true} |")
        return "\n".join(lines) + "\n"


def _strict_entities(sentences: list[list[str]]) -> set[tuple]:
    """(type, sentence, start, end) of the entities seqeval's strict IOB2 mode sees."""
    from seqeval.scheme import IOB2, Entities

    return {(e.tag, e.sent_id, e.start, e.end) for sent in Entities(sentences, IOB2).entities for e in sent}


def _prf(tp: int, pred: int, true: int) -> tuple[float, float, float]:
    p = tp / pred if pred else 0.0
    r = tp / true if true else 0.0
    return 100 * p, 100 * r, 100 * (2 * p * r / (p + r) if p + r else 0.0)
