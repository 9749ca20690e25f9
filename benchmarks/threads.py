"""How many torch threads a training run should use: 1 and 2 threads, on a quiet machine and beside a busy core.

    python -m benchmarks.threads [--sentences 2000] [--threads 1,2] [--no-docs] [overrides ...]

Times one epoch of the real training step (`ner.training.trainer.train_epoch`, harness.time_epoch) of the default
model over the first N CoNLL-2003 training sentences, for each thread count, first with nothing else running that
this benchmark started, then while a second process spins on one core (a pure-Python busy loop, at normal
priority, then at `nice 19`: what "another job on the machine" means). OpenMP's threads wait for each other at
every operation, so one slow thread stalls all of them: this is the measurement behind `trainer.threads`'s
default. The table is printed, logged as run `threads` of experiment `benchmarks`, and written between the
`threads` markers of docs/benchmarks.md (unless --no-docs).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import torch

from benchmarks import harness

BUSY = "while True: pass"
LOADS = {"quiet": None, "one busy core": 0, "one busy core, nice 19": 19}


def main() -> None:
    ap = harness.parser("threads", __doc__)
    ap.add_argument("--sentences", type=int, default=2000)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--tracking-uri", help="MLflow store (default: MLFLOW_TRACKING_URI, else ./mlruns)")
    ap.add_argument("--no-docs", action="store_true")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides of the training config")
    args = ap.parse_args()
    counts = [int(t) for t in args.threads.split(",")]
    sample = harness.training_sample(args.overrides, args.sentences, counts[0])
    rows = {}
    for load, nice in LOADS.items():
        for threads in counts:
            torch.set_num_threads(threads)
            with busy(nice):
                timing = harness.time_epoch(sample)
            rows[(load, threads)] = timing.per_s
            print(f"{load:24s} threads={threads}: {timing.per_s:8,.0f} tokens/s", flush=True)
    section = report(rows, counts, sample, harness.command("threads"))
    print(section)
    metrics = {f"tokens_per_s_{_key(load)}_t{t}": v for (load, t), v in rows.items()}
    harness.log_run("threads", args.tracking_uri, {"sentences": args.sentences, **vars(args)}, metrics, section)
    if not args.no_docs:
        harness.write_section("threads", section)


class busy:
    """A second process spinning on one core while the block runs (none when `nice` is None)."""

    def __init__(self, nice: int | None):
        self.nice, self.proc = nice, None

    def __enter__(self):
        if self.nice is not None:
            cmd = [sys.executable, "-c", BUSY]
            self.proc = subprocess.Popen(cmd, preexec_fn=lambda: os.nice(self.nice))  # noqa: PLW1509
            time.sleep(0.5)  # it is spinning before the timing starts
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


def report(rows: dict, counts: list[int], sample, command: str) -> str:
    info = harness.machine()
    header = " | ".join(f"threads={t}" for t in counts)
    lines = [
        "## Threads",
        "",
        f"Measured {info['date']} on {info['cpu']} ({info['cores']} cores), torch {info['torch']}: one epoch of"
        f" `train_epoch` over {len(sample.enc):,} sentences ({sample.tokens:,} tokens), tokens/s.",
        "",
        f"    {command}",
        "",
        f"| machine | {header} |",
        "|---|" + "---:|" * len(counts),
    ]
    for load in LOADS:
        lines.append(f"| {load} | " + " | ".join(f"{rows[(load, t)]:,.0f}" for t in counts) + " |")
    return "\n".join(lines)


def _key(load: str) -> str:
    return load.replace(", ", "_").replace(" ", "_")


if __name__ == "__main__":
    main()
