"""How sure distillation's teachers are on the sentences they were trained on, against sentences they never saw,
and the `trainer.teacher_temperature` that makes the first look like the second.

    python -m benchmarks.teacher_temperature --configs full-budget        # stored runs of `benchmarks.accuracy`

A teacher that has fitted the training set gives near-one-hot marginals there: the student is then taught little
beyond the gold tags it already has. Dividing the teachers' scores by a temperature softens those marginals; this
prints the mean per-token entropy of the averaged teachers' marginals (`ner.training.objectives.teacher_targets`,
the very targets a student learns) on dev at temperature 1, and on a sample of the training sentences over a grid
of temperatures, then the temperature at which the training sentences' entropy equals dev's (bisection on log T),
both dev as the teachers score it and at their calibrated temperature (fitted on dev, saved with each model): how
unsure they are on unseen text, and how unsure they should be.
Trains nothing; a few minutes on one thread.
"""

from __future__ import annotations

import math
import random

import torch

from benchmarks import harness
from benchmarks.accuracy import stored_jobs
from benchmarks.ensemble import load_members
from ner.data.corpus import DataConfig, Sentences, load_corpus
from ner.model.ensemble import Averaged
from ner.training.objectives import teacher_targets

GRID = (1.0, 1.5, 2.0, 3.0, 4.0)


def parse():
    ap = harness.parser("teacher_temperature", __doc__)
    harness.add_stored_runs_args(ap, "comma-separated config names of the teachers' runs")
    ap.add_argument("--sample", type=int, default=3000, help="training sentences to measure on (random, seed 1)")
    return ap.parse_args()


def entropy(teacher, tokens: list[list[str]], temperature: float) -> tuple[float, float]:
    """(mean per-token entropy in nats, mean probability of each token's likeliest tag) of the marginals."""
    labels = teacher.featurizer.labels.itos
    unary = teacher_targets(teacher, tokens, labels, temperature=temperature).unary.double()
    per_token = -(unary * unary.clamp_min(1e-12).log()).sum(1)
    return float(per_token.mean()), float(unary.max(1).values.mean())


def matching(teacher, tokens: list[list[str]], want: float, low: float, high: float, steps: int = 8) -> float:
    """The temperature in [low, high] whose entropy on `tokens` is `want` (entropy grows with the temperature)."""
    for _ in range(steps):
        mid = math.sqrt(low * high)
        low, high = (mid, high) if entropy(teacher, tokens, mid)[0] < want else (low, mid)
    return math.sqrt(low * high)


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    uri = harness.connect(args.tracking_uri, args.experiment)
    configs = args.configs.split(",")
    jobs = [j for j in stored_jobs(args.experiment, {}) if j.config in configs]
    if not jobs:
        raise SystemExit(f"no finished runs named <config>-s<seed> for {args.configs} in experiment {args.experiment}")
    teacher = Averaged(load_members(jobs, uri))
    corpus, _ = load_corpus(DataConfig(path=args.data))
    train = Sentences.of(corpus["train"]).tokens
    sample = random.Random(1).sample(list(train), min(args.sample, len(train)))
    dev = Sentences.of(corpus["validation"]).tokens
    names = ", ".join(f"{j.config}-s{j.seed} ({j.run_id[:8]})" for j in jobs)
    print(f"teachers: {names}; {len(sample)} training sentences, {len(dev)} dev sentences")
    calibrated = sum(m.temperature for m in teacher.members) / len(teacher.members)
    devs = {
        "dev": (1.0, *entropy(teacher, dev, 1.0)),
        "dev, calibrated": (calibrated, *entropy(teacher, dev, calibrated)),
    }
    print("| sentences | temperature | entropy per token (nats) | mean top-tag probability |")
    print("|---|---:|---:|---:|")
    for name, (t, h, top) in devs.items():
        print(f"| {name} | {t:.2f} | {h:.4f} | {top:.4f} |")
    rows = [(t, *entropy(teacher, sample, t)) for t in GRID]
    for t, h, top in rows:
        print(f"| train sample | {t:.2f} | {h:.4f} | {top:.4f} |")
    for name, (_, want, _) in devs.items():
        above = [t for t, h, _ in rows if h >= want]
        if not above:
            print(f"{name}: even temperature {GRID[-1]} leaves the training sentences surer")
            continue
        low = max([t for t, h, _ in rows if h < want], default=above[0])
        t = above[0] if low == above[0] else matching(teacher, sample, want, low, above[0])
        print(f"temperature at which the training sentences are as unsure as {name}: {t:.2f}")


if __name__ == "__main__":
    main()
