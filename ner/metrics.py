"""Entity-level scores with seqeval, on IOB2 tags, computed once over a whole split.

The headline is seqeval's default mode, which reads tags the way conlleval does (so numbers compare with the
papers); strict IOB2 mode is reported beside it, and the gap between the two is the count of predicted
sequences that are not valid IOB2 (a CRF with constrained transitions has none).
"""

from __future__ import annotations

from seqeval.metrics import classification_report, sequence_labeling, v1
from seqeval.scheme import IOB2

from ner import schemes


def score(gold: list[list[str]], pred: list[list[str]]) -> dict[str, float]:
    """Micro P/R/F1 (default and strict mode, in %) and per-type F1, all from IOB2 tag strings."""
    out: dict[str, float] = {}
    default = sequence_labeling.precision_recall_fscore_support(gold, pred, average="micro", zero_division=0)
    strict = v1.precision_recall_fscore_support(
        gold, pred, average="micro", zero_division=0, mode="strict", scheme=IOB2
    )
    for suffix, (p, r, f, _) in (("", default), ("_strict", strict)):
        out.update(
            {f"precision{suffix}": 100 * float(p), f"recall{suffix}": 100 * float(r), f"f1{suffix}": 100 * float(f)}
        )
    # seqeval lists per-type scores in sorted order of the types found in gold or predictions
    names = sorted({typ for seqs in (gold, pred) for seq in seqs for _, _, typ in schemes.spans(seq)})
    if names:
        _, _, f, _ = sequence_labeling.precision_recall_fscore_support(gold, pred, average=None, zero_division=0)
        out.update({f"f1_{name}": 100 * float(v) for name, v in zip(names, f, strict=True)})
    out["invalid_predicted_sequences"] = float(sum(not schemes.is_valid(seq, "iob2") for seq in pred))
    return out


def report(gold: list[list[str]], pred: list[list[str]]) -> str:
    """seqeval's per-type table in both modes, as text for an artifact."""
    default = classification_report(gold, pred, digits=4, zero_division=0)
    strict = classification_report(gold, pred, digits=4, mode="strict", scheme=IOB2, zero_division=0)
    return f"seqeval default mode (conlleval-compatible)\n{default}\nseqeval strict IOB2 mode\n{strict}"
