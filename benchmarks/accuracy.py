"""Accuracy on CoNLL-2003 over several seeds, next to the published BiLSTM anchors.

    python -m benchmarks.accuracy                                  # the default config, seeds 1,2,3
    python -m benchmarks.accuracy --config no-variational:1,2="model.variational_dropout=false"
    python -m benchmarks.accuracy --parallel 1 --threads 2         # one run at a time, both cores each
    python -m benchmarks.accuracy --from-store                     # the table again, from runs in MLflow

Every run is a real `python -m ner.train` in its own process (its whole config, metrics and model go to MLflow
experiment `accuracy`), `--parallel` of them at a time with `--threads` torch threads each: on a 2-core machine two
1-thread runs make the best use of the cores, and each still trains within the config's 30-minute budget. When all
have ended, the table (per run, then mean ± sample std per config) is printed, logged as a run of experiment
`benchmarks` and written between the `accuracy` markers of docs/benchmarks.md (unless --no-docs).

`--config NAME[:SEEDS]="overrides"` (repeatable) adds a config, e.g. an ablation, run on SEEDS (default: --seeds);
`default` (no overrides) is always run, first, unless --no-default. Test F1 is entity-level, seqeval's default
(conlleval-compatible) mode; "strict" is its strict mode. Not a test: 3 seeds take about an hour on 2 cores.

A little past 300 lines: training the runs and rebuilding the table from the store (`--from-store`) share one row
format, one report and one set of verdicts, so that a table is the same whichever way it was made.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import harness
from ner.tracking import store
from ner.training.sweep import fmt, mean_std

ANCHORS = {"Lample et al. 2016": 90.94, "Ma & Hovy 2016": 91.21, "NCRF++ (Yang & Zhang 2018)": 91.35}
WNUT_BEST = 41.86  # Derczynski et al. 2017, the shared task's best system (entity F1)
TARGETS = {"train": 91.0, "train + dev": 91.35, "minutes": 30.0}  # mean test F1 over 3 seeds (issue #19)
COLUMNS = ("test_f1", "test_f1_strict", "best_dev_f1", "epochs", "best_epoch", "train_minutes")


@dataclass
class Job:
    config: str
    overrides: list[str]
    seed: int
    log: Path
    run_id: str = ""
    returncode: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    wall_minutes: float = 0.0
    commit: str = ""


def parse() -> argparse.Namespace:
    ap = harness.parser("accuracy", __doc__)
    ap.add_argument("--seeds", default="1,2,3", help="comma-separated seeds, one run per seed and config")
    ap.add_argument("--parallel", type=int, default=2, help="runs at a time")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--config", action="append", default=[], metavar='NAME[:SEEDS]="k=v k=v"', help="an extra config")
    ap.add_argument("--no-default", action="store_true", help="run only the --config configs")
    ap.add_argument("--experiment", default="accuracy", help="MLflow experiment of the training runs")
    ap.add_argument("--tracking-uri", help="MLflow store (default: the project store, mlruns/mlflow.db)")
    ap.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    ap.add_argument(
        "--section",
        default="accuracy:Accuracy",
        metavar="MARKER:TITLE",
        help="the docs/benchmarks.md section to write (its markers, its heading), e.g. to keep an older table",
    )
    ap.add_argument(
        "--from-store",
        action="store_true",
        help="train nothing: rebuild the table from the finished runs of the experiment (newest per config and "
        "seed), e.g. to put the runs of several invocations in one table",
    )
    ap.add_argument(
        "--include-stopped",
        action="store_true",
        help="with --from-store: also show runs stopped by hand (dev F1 so far, no test F1; not in the means)",
    )
    ap.add_argument(
        "--flair",
        type=Path,
        metavar="RESULT.json",
        help="add the peer's row: the JSON that `.venv-flair/bin/python benchmarks/flair_accuracy.py --out` wrote",
    )
    ap.add_argument("--note", default="", help="a sentence for the docs section, e.g. how stored runs were trained")
    ap.add_argument(
        "--rename",
        action="append",
        default=[],
        metavar="OLD=NEW",
        help="with --from-store: show runs of config OLD (or OLD@COMMIT: only those trained at that commit) as NEW,"
        " e.g. when the default config has changed since",
    )
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for every run, e.g. trainer.max_minutes=30")
    return ap.parse_args()


def plan(args: argparse.Namespace, logs: Path) -> list[Job]:
    """The runs in order: the default config's seeds first, then each --config's (NAME:SEEDS limits its seeds)."""
    seeds = [int(s) for s in args.seeds.split(",")]
    configs = [] if args.no_default else [("default", seeds, [])]
    for item in args.config:
        name, sep, overrides = item.partition("=")
        name, _, own_seeds = name.partition(":")
        if not sep or not name:
            sys.exit(f'--config {item!r}: expected NAME[:SEEDS]="key=value ..."')
        configs.append((name, [int(s) for s in own_seeds.split(",")] if own_seeds else seeds, shlex.split(overrides)))
    return [Job(name, over, s, logs / f"{name}-s{s}.log") for name, seeds, over in configs for s in seeds]


def run(job: Job, args: argparse.Namespace) -> Job:
    """One training in a child process; its run id is read from the line `ner.train` prints when it starts."""
    command = [
        sys.executable, "-m", "ner.train",
        f"seed={job.seed}", f"trainer.threads={args.threads}", "trainer.progress=false",
        f"tracking.experiment={args.experiment}", f"tracking.run_name={job.config}-s{job.seed}",
        harness.setting("tracking.uri", harness.store_uri(args.tracking_uri)),
        *args.overrides, *job.overrides,
    ]  # fmt: skip
    start = time.perf_counter()
    with job.log.open("w") as log:
        job.returncode = subprocess.call(command, cwd=harness.ROOT, stdout=log, stderr=subprocess.STDOUT)
    job.wall_minutes = (time.perf_counter() - start) / 60
    found = re.search(r"^MLflow run ([0-9a-f]{32}) ", job.log.read_text(errors="replace"), re.MULTILINE)
    job.run_id = found.group(1) if found else ""
    status = "ok" if job.returncode == 0 else f"FAILED (exit {job.returncode}, log {job.log})"
    print(f"{job.config} seed {job.seed}: {status}, {job.wall_minutes:.1f} min, run {job.run_id}", flush=True)
    return job


def stored_jobs(experiment: str, rename: dict[str, str], stopped: bool = False) -> list[Job]:
    """The newest finished run of each config and seed (run names `<config>-s<seed>`) in `experiment`, oldest
    config first. `rename` maps a config name, or `name@commit` (7 hex digits) for the runs of one commit only, to
    the name it is shown under. With `stopped`, runs stopped by hand (KILLED) fill the places no finished run
    takes: they have dev scores up to their last epoch, and no test score."""
    import mlflow

    statuses = ("FINISHED", "KILLED") if stopped else ("FINISHED",)
    newest: dict[tuple[str, int], Job] = {}
    for status in statuses:
        runs = mlflow.search_runs(
            experiment_names=[experiment],
            filter_string=f"attributes.status = '{status}'",
            order_by=["attributes.start_time DESC"],
            output_format="list",
        )
        for run in runs:
            found = re.fullmatch(r"(.+)-s(\d+)", run.info.run_name or "")
            if not found:
                continue
            name, seed, commit = found.group(1), int(found.group(2)), run.data.tags.get("git_commit", "")[:7]
            config = rename.get(f"{name}@{commit}", rename.get(name, name))
            if (config, seed) not in newest:
                newest[config, seed] = Job(config, [], seed, Path(), run.info.run_id, 0)
    order = {name: i for i, name in enumerate(dict.fromkeys(j.config for j in reversed(newest.values())))}
    order["default"] = -1
    return sorted(newest.values(), key=lambda j: (order[j.config], j.seed))


def fetch_metrics(jobs: list[Job]) -> None:
    """Final metrics of each run; for a run stopped before the end, its best dev F1 and epochs so far."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    for job in jobs:
        if job.run_id:
            run = client.get_run(job.run_id)
            job.metrics, job.params = store.metrics_of(run), dict(run.data.params)
            job.commit = run.data.tags.get("git_commit", "")[:7]
            if run.info.status == "KILLED":
                job.commit += " (stopped)"
                history = store.history(client, job.run_id, "dev_f1")
                if history:
                    best = max(history, key=lambda m: m.value)
                    job.metrics.update(best_dev_f1=best.value, best_epoch=best.step, epochs=len(history))


def report(
    jobs: list[Job], info: dict, command: str, note: str = "", flair: dict | None = None
) -> tuple[str, dict[str, float]]:
    """The Markdown section: machine and command, every run, mean ± std per config, anchors and targets."""
    head = [
        f"Measured {info['date']} on {info['cpu']} ({info['cores']} cores), torch {info['torch']}, "
        f"Python {info['python']}.",
        "",
        f"    {command}",
        "",
        *([note, ""] if note else []),
        "| config | data | trained on | seed | test F1 | test F1 strict | dev F1 | epochs | best epoch | training min"
        " | MLflow run | commit |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for j in jobs:
        m = j.metrics
        cells = ["" if c not in m else str(int(m[c])) if c in ("epochs", "best_epoch") else f"{m[c]:.2f}"
                 for c in COLUMNS]  # fmt: skip
        head.append(
            f"| {j.config} | {dataset(j)} | {trained_on(j)} | {j.seed} | {' | '.join(cells)} | "
            f"`{j.run_id[:8] or 'failed'}` | {j.commit} |"
        )
    head += ["", "| config | data | trained on | runs | test F1 mean ± std | strict mean ± std | dev F1 mean ± std |"
             " best test F1 |", "|---|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    summary: dict[str, float] = {}
    for name in dict.fromkeys(j.config for j in jobs):
        first = next(j for j in jobs if j.config == name)
        where = f"{dataset(first)} | {trained_on(first)}"
        done = [j.metrics for j in jobs if j.config == name and "test_f1" in j.metrics]
        if not done:
            head.append(f"| {name} | {where} | 0 | | | | |")
            continue
        stats = {c: mean_std([m[c] for m in done if c in m]) for c in ("test_f1", "test_f1_strict", "best_dev_f1")}
        best = max(m["test_f1"] for m in done)
        summary.update({f"{name}_{c}_mean": s[0] for c, s in stats.items()})
        summary.update({f"{name}_test_f1_std": stats["test_f1"][1], f"{name}_test_f1_best": best})
        summary[f"{name}_train_minutes_max"] = max(m["train_minutes"] for m in done)
        cells = " | ".join(fmt(*stats[c]) if c != "best_dev_f1" or "best_dev_f1" in done[0] else "(trained on it)"
                           for c in ("test_f1", "test_f1_strict", "best_dev_f1"))  # fmt: skip
        head.append(f"| {name} | {where} | {len(done)} | {cells} | {best:.2f} |")
    if flair:  # the peer, trained by its own ModelTrainer recipe for the same budget, scored by the same seqeval call
        head.append(
            f"| Flair {flair['flair']} SequenceTagger | conll2003 | train | 1 | {flair['test_f1']:.2f} | | "
            f"{flair['dev_f1']:.2f} | {flair['test_f1']:.2f} |"
        )
        head += [
            "",
            f"Flair: `benchmarks/flair_accuracy.py` (its docstring says what differs from ours), seed {flair['seed']}, "
            f"{flair['threads']} thread, {flair['epochs']} epochs (best on dev: {flair['best_epoch']}) in "
            f"{flair['train_minutes']:.1f} min, stopped by: {flair['stop_reason']}.",
        ]
    head += ["", "How each config differs from the default of conf/ at this commit (from the runs' logged params):", ""]
    head += [f"- {name}: {differences(jobs, name)}" for name in dict.fromkeys(j.config for j in jobs)]
    anchors = ", ".join(f"{k} {v:.2f}" for k, v in ANCHORS.items())
    head += ["", f"Published anchors (CoNLL-2003 test, entity F1): {anchors}."]
    if any(dataset(j) == "wnut17" for j in jobs):
        head.append(f"WNUT-17 (test, entity F1): the 2017 shared task's best system {WNUT_BEST:.2f}.")
    head += verdicts(jobs, summary)
    return "\n".join(head), summary


def verdicts(jobs: list[Job], summary: dict[str, float]) -> list[str]:
    """The targets on CoNLL-2003, for configs with 3 seeds: train-only, the config with the best mean dev F1 (picked
    on dev, never on test); train + dev, every such config (there is no dev score to pick one by)."""
    counts = Counter(j.config for j in jobs if "test_f1" in j.metrics and dataset(j) == "conll2003")
    firsts = {j.config: j for j in reversed(jobs)}
    lines = []
    for kind in ("train", "train + dev"):
        names = [n for n in counts if counts[n] >= 3 and trained_on(firsts[n]) == kind]
        if kind == "train" and names:
            names = [max(names, key=lambda n: summary[f"{n}_best_dev_f1_mean"])]
        for name in names:
            mean, minutes = summary[f"{name}_test_f1_mean"], summary[f"{name}_train_minutes_max"]
            gap = mean - TARGETS[kind]
            lines.append(
                f"Target ({kind}, `{name}`, {counts[name]} seeds): mean test F1 {mean:.2f} vs ≥ {TARGETS[kind]}: "
                f"{'met' if gap >= 0 else f'not met ({gap:+.2f})'}; longest training {minutes:.1f} min vs ≤ "
                f"{TARGETS['minutes']:.0f}: {'met' if minutes <= TARGETS['minutes'] else 'not met'}."
            )
    return [""] + lines if lines else []


def dataset(job: Job) -> str:
    return Path(job.params.get("data.path", "?")).name


def trained_on(job: Job) -> str:
    return "train + dev" if job.params.get("trainer.train_with_dev") == "True" else "train"


@functools.cache
def default_params() -> dict[str, str]:
    """The current default config of conf/, flattened the way `ner.train` logs it as params."""
    from omegaconf import OmegaConf

    return store.flatten(OmegaConf.to_container(harness.compose(), resolve=True))


def differences(jobs: list[Job], config: str) -> str:
    """The params of `config`'s first run that differ from the current default config (`none` if none do)."""
    default = default_params()
    params = next((j.params for j in jobs if j.config == config and j.params), {})
    ignored = ("seed", "tracking.", "trainer.threads", "trainer.progress", "model.word_dim")  # word_dim: the vectors
    changed = [f"`{k}={v}`" for k, v in sorted(params.items()) if default.get(k, v) != v and not k.startswith(ignored)]
    return ", ".join(changed) or "none (the default)"


def main() -> None:
    args = parse()
    info = harness.machine()
    command = harness.command("accuracy", drop=("--note",))  # the note is printed below it
    harness.connect(args.tracking_uri, args.experiment)
    if args.from_store:
        jobs = stored_jobs(args.experiment, dict(r.split("=", 1) for r in args.rename), args.include_stopped)
        fetch_metrics(jobs)
    else:
        jobs = train_all(args)
    flair = json.loads(args.flair.read_text()) if args.flair else None
    section, summary = report(jobs, info, command, args.note, flair)
    print("\n" + section)
    params = {**info, "seeds": args.seeds, "parallel": args.parallel, "threads": args.threads}
    params["runs"] = " ".join(j.run_id for j in jobs)
    harness.log_run("accuracy", args.tracking_uri, params, summary, section)
    if not args.no_docs:
        marker, _, title = args.section.partition(":")
        harness.write_section(marker, f"## {title or marker}\n\n" + section)


def train_all(args: argparse.Namespace) -> list[Job]:
    with tempfile.TemporaryDirectory(prefix="bench-accuracy-") as tmp:
        logs = Path(os.environ.get("BENCH_LOG_DIR", tmp))
        logs.mkdir(parents=True, exist_ok=True)  # BENCH_LOG_DIR may name a folder not made yet
        jobs = plan(args, logs)
        with ThreadPoolExecutor(max_workers=args.parallel) as pool:
            jobs = list(pool.map(lambda j: run(j, args), jobs))
        fetch_metrics(jobs)
        for j in jobs:
            if j.returncode != 0:
                print(f"--- {j.log.name} (last lines)\n" + "\n".join(j.log.read_text().splitlines()[-15:]))
    return jobs


if __name__ == "__main__":
    main()
