"""Where a model goes wrong, in terms a person can act on: entity outcomes, seen vs unseen words, length, examples.

Every predicted and gold entity gets one outcome (the categories of Chinchor & Sundheim's MUC scoring, as
nervaluate and most error studies use them):

- correct: same span, same type;
- wrong type: same span, other type;
- wrong boundary: overlapping spans, same type;
- wrong type and boundary: overlapping spans, other type;
- missed: a gold entity no prediction overlaps;
- spurious: a prediction no gold entity overlaps.

A prediction that overlaps several gold entities is paired with the first; the others count as missed.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ner.data import schemes
from ner.data.vocab import normalise

OUTCOMES = ("correct", "wrong type", "wrong boundary", "wrong type and boundary", "missed", "spurious")
LENGTHS = ((1, 10), (11, 20), (21, 40), (41, 10**9))  # sentence-length buckets (tokens)


@dataclass
class Finding:
    """One outcome in one sentence: the gold and the predicted entity (either may be None)."""

    outcome: str
    sentence: int
    gold: schemes.Span | None
    pred: schemes.Span | None


def findings(gold: Sequence[list[str]], pred: Sequence[list[str]]) -> list[Finding]:
    """The outcome of every gold and predicted entity, sentence by sentence (IOB2 tags in, read conlleval's way)."""
    out: list[Finding] = []
    for i, (g_tags, p_tags) in enumerate(zip(gold, pred, strict=True)):
        gold_spans, pred_spans = schemes.spans(list(g_tags)), schemes.spans(list(p_tags))
        paired: set[schemes.Span] = set()
        for p in pred_spans:
            partner = next((g for g in gold_spans if g[0] < p[1] and p[0] < g[1] and g not in paired), None)
            if partner is None:
                out.append(Finding("spurious", i, None, p))
                continue
            paired.add(partner)
            same_span, same_type = partner[:2] == p[:2], partner[2] == p[2]
            outcome = ("correct" if same_type else "wrong type") if same_span else None
            outcome = outcome or ("wrong boundary" if same_type else "wrong type and boundary")
            out.append(Finding(outcome, i, partner, p))
        out.extend(Finding("missed", i, g, None) for g in gold_spans if g not in paired)
    return out


@dataclass
class ErrorReport:
    """Outcome counts per type, F1 for seen/unseen words and per sentence length, and the most frequent errors."""

    by_type: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    groups: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))  # name -> tp/pred/true
    errors: Counter = field(default_factory=Counter)  # (outcome, gold text/type, predicted type) -> count
    examples: dict[tuple, str] = field(default_factory=dict)

    seen: set[str] | None = None  # the training data's words, normalised; None: no seen/unseen split

    @classmethod
    def of(
        cls,
        tokens: Sequence[list[str]],
        gold: Sequence[list[str]],
        pred: Sequence[list[str]],
        train_words: Iterable[str] | None = None,
    ) -> ErrorReport:
        """`train_words`: the training data's words (compared lower-cased, digits as in the vocabulary)."""
        report = cls(seen={normalise(w) for w in train_words} if train_words is not None else None)
        report.add(tokens, gold, pred)
        return report

    def add(self, tokens: Sequence[list[str]], gold: Sequence[list[str]], pred: Sequence[list[str]]) -> None:
        """Count one more batch of sentences (`ner.tag` adds a large CoNLL input chunk by chunk)."""
        for f in findings(gold, pred):
            self._add(f, tokens[f.sentence])

    def _add(self, f: Finding, tokens: list[str]) -> None:
        entity = f.gold or f.pred
        self.by_type[entity[2] if f.outcome != "spurious" else f.pred[2]][f.outcome] += 1
        groups = [_length_bucket(len(tokens))]
        for span, kind in ((f.gold, "true"), (f.pred, "pred")):
            if span is None:
                continue
            names = [groups[0]]
            if self.seen is not None:
                names.append(
                    "all words seen"
                    if all(normalise(w) in self.seen for w in tokens[span[0] : span[1]])
                    else "an unseen word"
                )
            for name in names:
                self.groups[name][kind] += 1
                if f.outcome == "correct" and kind == "true":
                    self.groups[name]["tp"] += 1
        if f.outcome != "correct":
            text = " ".join(tokens[entity[0] : entity[1]])
            key = (f.outcome, f"{text} ({entity[2]})" if f.gold else text, f.pred[2] if f.pred else "-")
            self.errors[key] += 1
            self.examples.setdefault(key, _marked(tokens, f.gold, f.pred))

    def markdown(self, top: int = 20) -> str:
        """The three tables and the list of frequent errors, as one Markdown file."""
        types = sorted(self.by_type)
        lines = [
            "## Entity outcomes per type",
            "",
            "| type | " + " | ".join(OUTCOMES) + " |",
            "|---|" + "---|" * len(OUTCOMES),
        ]
        for typ in [*types, "all"]:
            counts = self.by_type[typ] if typ != "all" else sum(self.by_type.values(), Counter())
            lines.append(f"| {typ} | " + " | ".join(str(counts[o]) for o in OUTCOMES) + " |")
        lines += ["", "## F1 by group", "", "| group | gold entities | predicted | F1 |", "|---|---|---|---|"]
        order = [_length_name(b) for b in LENGTHS] + ["all words seen", "an unseen word"]
        for name in [n for n in order if n in self.groups]:
            c = self.groups[name]
            lines.append(f"| {name} | {c['true']} | {c['pred']} | {_f1(c):.2f} |")
        lines += [
            "",
            f"## The {top} most frequent errors",
            "",
            "| count | outcome | entity | predicted type | example |",
        ]
        lines.append("|---|---|---|---|---|")
        for key, count in self.errors.most_common(top):
            outcome, entity, predicted = key
            lines.append(f"| {count} | {outcome} | {_cell(entity)} | {predicted} | {_cell(self.examples[key])} |")
        return "\n".join(lines) + "\n"

    def plot(self, path, title: str) -> None:
        """Stacked bars: each type's entities by outcome."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        types = sorted(self.by_type)
        fig, ax = plt.subplots(figsize=(7, 0.6 * len(types) + 1.8))
        left = [0] * len(types)
        colors = ["#4c9f50", "#e6a23c", "#f2c94c", "#d9822b", "#c0392b", "#7f8c8d"]
        for outcome, color in zip(OUTCOMES, colors, strict=True):
            values = [self.by_type[t][outcome] for t in types]
            ax.barh(types, values, left=left, color=color, label=outcome)
            left = [a + b for a, b in zip(left, values, strict=True)]
        ax.set_xlabel("entities (gold, or predicted for spurious)")
        ax.set_title(title)
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)


def _length_bucket(n: int) -> str:
    return next(_length_name(b) for b in LENGTHS if b[0] <= n <= b[1])


def _length_name(bucket: tuple[int, int]) -> str:
    low, high = bucket
    return f"sentences of {low}+ tokens" if high >= 10**9 else f"sentences of {low}-{high} tokens"


def _f1(c: Counter) -> float:
    p = c["tp"] / c["pred"] if c["pred"] else 0.0
    r = c["tp"] / c["true"] if c["true"] else 0.0
    return 100 * (2 * p * r / (p + r) if p + r else 0.0)


def _marked(tokens: list[str], gold: schemes.Span | None, pred: schemes.Span | None) -> str:
    """The sentence with the gold entity in [brackets]TYPE and the predicted one in {braces}TYPE, nested."""
    marks = [m for m in ((gold, "[", "]"), (pred, "{", "}")) if m[0] is not None]
    marks.sort(key=lambda m: (m[0][0], -m[0][1]))  # the outer one (earlier start, then later end) opens first
    out = list(tokens)
    for span, left, _ in reversed(marks):  # prepended: the outer one last, so it stands leftmost
        out[span[0]] = left + out[span[0]]
    for span, _, right in reversed(marks):  # the inner one closes first
        out[span[1] - 1] = out[span[1] - 1] + right + span[2]
    return " ".join(out)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
