"""After training: calibrate the entity scores, score dev and test, and write what a person reads about them.

Produces numbers and files only; `ner.training.pipeline` logs them to MLflow. Every prediction comes from the one
engine (`ner.model.engine`), so these files describe exactly what `ner.tag` will output for the same sentences.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ner import config
from ner.evaluation import calibration, metrics, report
from ner.evaluation.errors import ErrorReport
from ner.evaluation.html import error_page
from ner.model.engine import Engine, Tagged

SPLITS = (("validation", "best_dev", "dev"), ("test", "test", "test"))  # (corpus split, metric prefix, file prefix)


@dataclass
class EvaluationConfig:
    """`evaluation` (conf/evaluation/default.yaml): what is measured and logged after training."""

    calibrate: bool = True  # fit one temperature on dev (NLL), store it with the model, apply it when tagging
    error_examples: int = 20  # the most frequent errors listed in <split>_errors.md, each with an example
    html_sentences: int = 500  # test sentences on the logged HTML page (0 = no page; -1 = all)

    def __post_init__(self) -> None:
        config.at_least("evaluation.error_examples", self.error_examples, 0)
        config.at_least("evaluation.html_sentences", self.html_sentences, -1)


@dataclass
class Assessment:
    """What `assess` found: final metrics, text files (name -> content), and images written to a folder."""

    metrics: dict[str, float] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    images: list[Path] = field(default_factory=list)
    temperature: float = 1.0


def assess(engine: Engine, splits: dict, cfg: EvaluationConfig, train_words: Sequence[str], folder: Path) -> Assessment:
    """Fit the temperature on dev (sets `engine.tagger.temperature`), then score and describe dev and test.

    `splits`: corpus split name -> `ner.data.corpus.Sentences`; images go to `folder`.
    """
    out = Assessment()
    tagger = engine.tagger
    tagger.temperature = 1.0
    dev = splits.get("validation")
    if cfg.calibrate and dev is not None:
        out.temperature = calibration.fit_temperature(engine, dev.tokens, dev.gold, dev.documents)
    rows = {}
    for split, prefix, short in SPLITS:
        if split not in splits:
            continue
        data = splits[split]
        tagger.temperature = 1.0
        raw = engine.tag_sentences(data.tokens, data.documents, scores=True)
        tagger.temperature = out.temperature
        tagged = engine.tag_sentences(data.tokens, data.documents, scores=True) if out.temperature != 1.0 else raw
        pred, own = tagged.tags(engine.labels), tagged.tags(engine.labels, own=True)
        scores = metrics.score(data.gold, pred, own, invalid=len(tagged.invalid))
        rows[short] = scores
        types = engine.labels.types
        before = calibration.Outcomes.of(raw, types, data.gold)
        after = calibration.Outcomes.of(tagged, types, data.gold)
        scores.update(_calibration_metrics(before, after))
        out.metrics.update({f"{prefix}_{k}": v for k, v in scores.items()})
        errors = ErrorReport.of(data.tokens, data.gold, pred, train_words)
        out.files.update(
            {
                f"{short}_scores.md": metrics.report(data.gold, pred, own),
                f"{short}_errors.md": errors.markdown(cfg.error_examples),
                f"{short}_thresholds.md": calibration.threshold_table(after),
                f"{short}_predictions.conll.txt": report.conll_predictions(data.tokens, data.gold, pred),
            }
        )
        errors.plot(folder / f"{short}_errors.png", f"{short}: entity outcomes per type")
        report.confusion_plot(data.gold, pred, folder / f"{short}_confusion.png", f"{short} (tokens)")
        out.images += [folder / f"{short}_errors.png", folder / f"{short}_confusion.png"]
        out.images += calibration.plots(before, after, out.temperature, folder, short)
        if short == "test" and cfg.html_sentences:
            page = error_page(data.tokens, data.gold, pred, sentence_scores(tagged), limit=cfg.html_sentences)
            out.files["test_errors.html"] = page
    if dev is not None:  # no dev (trained on train + dev): no temperature fitted, and no dev/ metric at all
        out.metrics["temperature"] = out.temperature
    keys = ["precision", "recall", "f1", "f1_strict", "invalid_predicted_sequences", "ece"]
    keys += sorted(k for k in rows.get("test", {}) if k.startswith("f1_") and k != "f1_strict")
    out.files["scores.md"] = report.table(rows, keys)
    return out


def _calibration_metrics(before: calibration.Outcomes, after: calibration.Outcomes) -> dict[str, float]:
    out = {"ece_uncalibrated": float(before.ece()), "ece": float(after.ece())}
    for threshold in (0.5, 0.9):
        out[f"precision_at_score_{threshold}"], out[f"recall_at_score_{threshold}"], _ = after.at_threshold(threshold)
    return out


def sentence_scores(tagged: Tagged) -> list[dict[tuple[int, int], float]]:
    """Per sentence: (first token, end token) of each entity, relative to the sentence -> its score."""
    bounds = [0]
    for n in tagged.lengths.tolist():
        bounds.append(bounds[-1] + n)
    out: list[dict[tuple[int, int], float]] = [{} for _ in tagged.lengths]
    if tagged.score is None:
        return out
    for a, b, s in zip(tagged.first.tolist(), tagged.stop.tolist(), tagged.score.tolist(), strict=True):
        i = bisect.bisect_right(bounds, a) - 1
        out[i][(a - bounds[i], b - bounds[i])] = s
    return out
