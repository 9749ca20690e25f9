"""Entity scores a user can threshold: one temperature fitted on dev, and how well the scores match accuracy.

The score of an entity is its span marginal under the model (`CRF.span_probs`). A network trained to a low loss is
over-confident, so its raw scores overstate how often an entity is right. Temperature scaling (Guo et al. 2017)
divides every tag score (emissions and transitions) by one number T fitted on dev by negative log-likelihood of
the gold tag sequences: it changes no prediction (Viterbi and argmax are unchanged by a positive scale), only the
scores. The expected calibration error (ECE) then says, over equal-width score bins, how far the share of correct
entities is from the mean score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ner.data import schemes
from ner.model.engine import Engine, Tagged

BINS = 10  # equal-width score bins of the ECE and the reliability diagram
THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(20))  # 0, 0.05, ..., 0.95: the precision/recall table


def fit_temperature(engine: Engine, tokens: Sequence[list[str]], gold: Sequence[list[str]], documents=None) -> float:
    """The T > 0 that minimises the dev NLL of the gold sequences (golden-section search on log T in [1/20, 20])."""
    tagger = engine.tagger
    label_id = tagger.featurizer.labels.stoi
    flat = np.asarray([label_id[t] for seq in gold for t in schemes.convert(list(seq), tagger.scheme)], dtype=np.int64)
    batches = [
        (emissions, mask, torch.from_numpy(_place(flat, positions, mask)))
        for positions, emissions, mask in engine.emissions(tokens, documents)
    ]
    chain = tagger.chain

    def nll(log_t: float) -> float:
        t = math.exp(log_t)
        with torch.no_grad():
            return float(sum(chain.nll(e, g, m, temperature=t).double().sum() for e, m, g in batches))

    lo, hi = math.log(1 / 20), math.log(20)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(40):  # the bracket shrinks by 0.618 each step: 40 steps pin log T to ~1e-8
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(b)
    return math.exp((lo + hi) / 2)


def _place(flat: np.ndarray, positions: np.ndarray, mask: torch.Tensor) -> np.ndarray:
    """Gold label ids laid out like the batch (B, T); padding gets label 0 (masked out anyway)."""
    out = np.zeros(tuple(mask.shape), dtype=np.int64)
    out[mask.cpu().numpy()] = flat[positions]
    return out


@dataclass
class Outcomes:
    """Every predicted entity's score and whether it is exactly right, plus the number of gold entities."""

    score: np.ndarray
    correct: np.ndarray
    gold_entities: int

    @classmethod
    def of(cls, tagged: Tagged, types: list[str], gold: Sequence[list[str]]) -> Outcomes:
        """Match predicted entities (from `tagged`, with scores) with the gold IOB2 tags' entities, exactly."""
        bounds = np.concatenate([[0], np.cumsum([len(s) for s in gold])])
        gold_set = {
            (int(bounds[i]) + a, int(bounds[i]) + b, typ)
            for i, seq in enumerate(gold)
            for a, b, typ in schemes.spans(list(seq))
        }
        pred_types = [types[i] for i in tagged.iob2[tagged.first].tolist()]
        spans = zip(tagged.first.tolist(), tagged.stop.tolist(), pred_types, strict=True)
        correct = np.fromiter((span in gold_set for span in spans), dtype=bool, count=len(pred_types))
        return cls(np.asarray(tagged.score, dtype=np.float64), correct, len(gold_set))

    def ece(self) -> float:
        """Expected calibration error over `BINS` equal-width bins, in % (0 = scores are accuracies)."""
        if not len(self.score):
            return 0.0
        bins = np.minimum((self.score * BINS).astype(int), BINS - 1)
        gap = sum(
            abs(self.correct[bins == b].mean() - self.score[bins == b].mean()) * (bins == b).sum()
            for b in range(BINS)
            if (bins == b).any()
        )
        return 100 * gap / len(self.score)

    def reliability(self) -> list[tuple[float, float, float, int]]:
        """(bin low, mean score, share correct, entities) per non-empty bin."""
        bins = np.minimum((self.score * BINS).astype(int), BINS - 1)
        rows = []
        for b in range(BINS):
            inside = bins == b
            if inside.any():
                rows.append(
                    (b / BINS, float(self.score[inside].mean()), float(self.correct[inside].mean()), int(inside.sum()))
                )
        return rows

    def at_threshold(self, threshold: float) -> tuple[float, float, int]:
        """(precision %, recall %, entities kept) of the entities scored at least `threshold`."""
        keep = self.score >= threshold
        kept, right = int(keep.sum()), int(self.correct[keep].sum())
        precision = 100 * right / kept if kept else 0.0
        recall = 100 * right / self.gold_entities if self.gold_entities else 0.0
        return precision, recall, kept


def threshold_table(outcomes: Outcomes) -> str:
    """Markdown: precision and recall of the entities kept at each score threshold (what `min_score=` keeps)."""
    lines = [
        "| min_score | precision | recall | entities kept |",
        "|---|---|---|---|",
    ]
    for t in THRESHOLDS:
        p, r, kept = outcomes.at_threshold(t)
        lines.append(f"| {t:.2f} | {p:.2f} | {r:.2f} | {kept} |")
    return "\n".join(lines) + "\n"


def plots(before: Outcomes, after: Outcomes, temperature: float, folder: Path, split: str) -> list[Path]:
    """The reliability diagram (before and after calibration) and precision/recall against the threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = [folder / f"{split}_reliability.png", folder / f"{split}_threshold_curve.png"]
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    for outcomes, name in ((before, "T = 1"), (after, f"T = {temperature:.2f} (fitted on dev)")):
        rows = outcomes.reliability()
        ax.plot([r[1] for r in rows], [r[2] for r in rows], marker="o", label=f"{name}: ECE {outcomes.ece():.2f}%")
    ax.set_xlabel("entity score (mean per bin)")
    ax.set_ylabel("share of entities exactly right")
    ax.set_title(f"{split}: reliability of entity scores")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(paths[0], dpi=100)
    plt.close(fig)
    grid = np.linspace(0, 0.99, 100)
    curve = [after.at_threshold(t) for t in grid]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(grid, [c[0] for c in curve], label="precision")
    ax.plot(grid, [c[1] for c in curve], label="recall")
    ax.set_xlabel("min_score (calibrated entity score)")
    ax.set_ylabel("%")
    ax.set_title(f"{split}: entities kept at a score threshold")
    ax.legend()
    fig.tight_layout()
    fig.savefig(paths[1], dpi=100)
    plt.close(fig)
    return paths
