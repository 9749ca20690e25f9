"""benchmarks.accuracy's verdicts: train-only and train + dev runs are judged apart, against their own targets, and a
train-only config is picked on dev F1, never on test."""

from __future__ import annotations

from pathlib import Path

from benchmarks.accuracy import TARGETS, Job, report


def job(config: str, seed: int, test: float, dev: float | None, with_dev: bool = False, data: str = "conll2003"):
    metrics = {"test_f1": test, "test_f1_strict": test, "epochs": 80, "best_epoch": 80, "train_minutes": 29.0}
    if dev is not None:
        metrics["best_dev_f1"] = dev
    params = {"data.path": f"../shared/data/{data}", "trainer.train_with_dev": str(with_dev)}
    return Job(config, [], seed, Path(), run_id=f"{config}{seed}".ljust(32, "0"), returncode=0, metrics=metrics,
               params=params)  # fmt: skip


def test_train_only_is_picked_on_dev_and_train_plus_dev_is_judged_on_its_own_target():
    info = {"date": "today", "cpu": "cpu", "cores": 2, "torch": "2", "python": "3"}
    jobs = [job("a", s, test=91.5, dev=94.0) for s in (1, 2, 3)]  # best on test, worse on dev
    jobs += [job("b", s, test=90.8, dev=95.0) for s in (1, 2, 3)]
    jobs += [job("twd", s, test=91.4, dev=None, with_dev=True) for s in (1, 2, 3)]
    jobs += [job("wnut", 1, test=40.0, dev=50.0, data="wnut17")]
    text, summary = report(jobs, info, "python -m benchmarks.accuracy")
    assert f"Target (train, `b`, 3 seeds): mean test F1 90.80 vs ≥ {TARGETS['train']}: not met (-0.20)" in text
    assert "`a`" not in text.split("Target (train")[1]  # picked on dev, never on test
    assert f"Target (train + dev, `twd`, 3 seeds): mean test F1 91.40 vs ≥ {TARGETS['train + dev']}: met" in text
    assert "| twd | conll2003 | train + dev | 3 | 91.40 ± 0.00 | 91.40 ± 0.00 | (trained on it) | 91.40 |" in text
    assert "WNUT-17" in text and "wnut" not in text.split("Target (")[1]
