"""The cell x direction x seed study, end to end: why gated cells, in F1 by sentence length and in gradients.

    python -m pipelines.study                  # the full study: whole CoNLL-2003, default model, 3 seeds, EPOCHS each
    python -m pipelines.study --quick          # ~15 min on 2 cores: 2,000 training sentences, 5 epochs, 2 seeds

Steps:
1. one Hydra sweep, `python -m ner.train -m model.cell=rnn,gru,lstm model.bidirectional=false,true seed=...`, so
   every run is a child of one MLflow parent run (ner/training/sweep.py) in experiment `study` (or `study-quick`),
   run through the joblib launcher, `--jobs` at a time (default 2: one per core, one torch thread each;
   `--jobs 1` runs them one after another in this process, with Hydra's basic launcher). Every run has the same
   fixed budget, `--epochs` epochs with no early stopping and no time limit, so the settings are compared at equal
   training, not at whatever a time budget allowed each;
2. for each finished run, its `test_predictions.conll` artifact is scored with seqeval per sentence-length bucket
   (1-10, 11-20, 21-40, 41+ tokens: where a vanilla RNN should lose is the long sentences);
3. for each finished run, the final model's gradient profile (ner/gradients.py) on the longest test sentences;
4. `results/study.md` and `results/study.csv`: mean ± sample std over seeds of dev F1, test F1 and test F1 per
   bucket for each setting, and `results/study_gradients.png`: the mean profile of each setting, log scale;
   the study's wall time against the sum of its runs' own durations (the time the same runs would take one after
   another, if a run alone were as fast as a run beside another one: on 2 cores it is a little faster), and the
   seconds per epoch of each setting (training plus the dev evaluation), from which docs/scale-out.md sizes sweeps.

A little over 300 lines because the study's whole story (sweep, scoring by bucket, profiles, timing, tables) is
kept in one file that a reader can follow top to bottom.

Scores are seqeval's default (conlleval-compatible) mode, as everywhere in the project. Settings are compared on
test F1 here because this is a study, not a model choice: choosing a model is promote.py's job, on dev F1.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import torch

from ner.data import schemes
from ner.evaluation import metrics
from ner.model.tagger import Tagger
from ner.tracking import store
from ner.training.gradients import plot_profiles, profile_batch, timestep_grad_norms
from ner.training.sweep import fmt, mean_std, to_csv

ROOT = Path(__file__).resolve().parents[1]
BUCKETS = ((1, 10), (11, 20), (21, 40), (41, 10_000))  # sentence length in tokens, inclusive
PROFILE_DISTANCES = (1, 5, 10, 20, 40)  # gradient-norm columns of the Markdown table
PREDICTIONS = ("test_predictions.conll.txt", "test_predictions.conll")  # the artifact's name, newest first
EPOCHS = 10  # the full study's budget per run: 18 runs, two at a time, ~1 h on a quiet 2-core machine (scale-out.md)
QUICK = [
    "data.max_train_samples=2000",  # of 14,041; dev and test stay whole so every bucket is scored on all of it
    "model.hidden_size=100",
]


def budget(epochs: int) -> list[str]:
    """One fixed budget per run: exactly `epochs` epochs, no early stopping, no wall-clock limit."""
    return [f"trainer.max_epochs={epochs}", "trainer.patience=0", "trainer.max_minutes=0"]


def launcher(jobs: int) -> list[str]:
    """joblib runs `jobs` at a time in worker processes (loky gives each one OpenMP/MKL thread per core it gets,
    and trainer.threads=1 is the default); 1 = Hydra's basic launcher, one after another in this process."""
    return [] if jobs == 1 else ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"]


def bucket_name(low: int, high: int) -> str:
    return f"{low}+" if high >= 10_000 else f"{low}-{high}"


def read_predictions(text: str) -> list[tuple[list[str], list[str], list[str]]]:
    """`token gold pred` lines, blank line between sentences -> (tokens, gold, pred) per sentence."""
    sentences, current = [], []
    for line in text.splitlines() + [""]:
        if line.strip():
            current.append(line.rsplit(" ", 2))
        elif current:
            sentences.append(tuple(list(col) for col in zip(*current, strict=True)))
            current = []
    return sentences


def bucket_f1(sentences: list[tuple[list[str], list[str], list[str]]]) -> dict[str, float]:
    """Test F1 over the sentences of each length bucket (one seqeval call per bucket, as for the whole split)."""
    out = {}
    for low, high in BUCKETS:
        chosen = [s for s in sentences if low <= len(s[0]) <= high]
        gold, pred = [s[1] for s in chosen], [s[2] for s in chosen]
        out[f"f1_{bucket_name(low, high)}"] = metrics.score(gold, pred)["f1"] if chosen else math.nan
    return out


def bucket_sizes(sentences: list[tuple[list[str], list[str], list[str]]]) -> dict[str, tuple[int, int]]:
    """(sentences, gold entities) per bucket: how much each bucket's F1 rests on."""
    sizes = {}
    for low, high in BUCKETS:
        chosen = [s for s in sentences if low <= len(s[0]) <= high]
        sizes[bucket_name(low, high)] = (len(chosen), sum(len(schemes.spans(s[1])) for s in chosen))
    return sizes


def gradient_profile(run_id: str, sentences: list, max_distance: int = 50) -> list[float]:
    """The final model's gradient profile on the 16 longest test sentences (at most 80 tokens)."""
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model", dst_path=tmp))
        model = Tagger.load(local / "artifacts" / "tagger")
    tokens = [s[0] for s in sentences]
    tags = [schemes.convert(s[1], model.scheme) for s in sentences]
    encoded = model.featurizer.encode(tokens, tags)
    return timestep_grad_norms(model, encoded.batch(profile_batch(encoded)), max_distance, positions=20).tolist()


def run_sweep(sweep_dir: Path, args: argparse.Namespace) -> None:
    """Step 1: the whole grid as one Hydra multirun (a failed job is recorded and the others still run)."""
    cmd = [
        sys.executable,
        "-m",
        "ner.train",
        "-m",
        f"model.cell={args.cells}",
        f"model.bidirectional={args.directions}",
        f"seed={args.seeds}",
        f"tracking.experiment={args.experiment}",
        f"hydra.sweep.dir={sweep_dir}",
        "trainer.progress=false",
        *launcher(args.jobs),
        *_defaults_not_overridden((QUICK if args.quick else []) + budget(args.epochs), args.override),
        *args.override,
    ]
    if args.tracking_uri:
        cmd.append(f"tracking.uri={args.tracking_uri}")
    print("+ " + " ".join(cmd), flush=True)
    code = subprocess.run(cmd, cwd=ROOT).returncode
    if code not in (0, 1):  # 1: some jobs failed, the rest are still worth a table
        raise SystemExit(f"the sweep exited with {code}")


def _defaults_not_overridden(defaults: list[str], overrides: list[str]) -> list[str]:
    """Hydra refuses two values for one key: the user's override replaces the preset's."""
    keys = {o.split("=", 1)[0] for o in overrides}
    out: dict[str, str] = {}
    for d in defaults:  # a later preset value replaces an earlier one (the quick form's epochs, then --epochs)
        out[d.split("=", 1)[0]] = d
    return [d for k, d in out.items() if k not in keys]


def collect(sweep_dir: Path, tracking_uri: str | None, profiles: bool) -> list[dict]:
    """Steps 2-3: per finished run, its setting, final metrics, bucketed test F1 and gradient profile."""
    from ner.tracking import store

    mlflow.set_tracking_uri(store.store_uri(tracking_uri, ROOT))
    if not (sweep_dir / "sweep_runs.csv").is_file():
        raise SystemExit(f"{sweep_dir} has no sweep_runs.csv: not a finished sweep of ner.train -m")
    jobs = list(csv.DictReader(io.StringIO((sweep_dir / "sweep_runs.csv").read_text())))
    rows = []
    for job in jobs:
        if job["status"] != "FINISHED":
            print(f"skipping job {job['job']} ({job['status']}): {job['error']}", flush=True)
            continue
        run = mlflow.get_run(job["run_id"])
        sentences = read_predictions(_test_predictions(job["run_id"]))
        row = {
            "cell": run.data.params["model.cell"],
            "bidirectional": run.data.params["model.bidirectional"] == "True",
            "seed": int(run.data.params["seed"]),
            "run_id": job["run_id"],
            "best_dev_f1": store.metrics_of(run)["best_dev_f1"],
            "test_f1": store.metrics_of(run)["test_f1"],
            "epochs": int(store.metrics_of(run).get("epochs", 0)),
            "threads": run.data.params.get("trainer.threads", "?"),
            "max_train": int(run.data.params.get("data.max_train_samples", 0)),
            "epoch_seconds": _mean_epoch_seconds(job["run_id"]),
            "run_minutes": (run.info.end_time - run.info.start_time) / 60_000,
            **bucket_f1(sentences),
            "_sizes": bucket_sizes(sentences),
        }
        if profiles:
            t0 = time.perf_counter()
            row["_profile"] = gradient_profile(job["run_id"], sentences)
            print(f"gradient profile of {run.info.run_name}: {time.perf_counter() - t0:.1f} s", flush=True)
        rows.append(row)
    return rows


def _test_predictions(run_id: str) -> str:
    """The run's test predictions, `token gold pred` lines: `test_predictions.conll.txt` (`.conll` before)."""
    names = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id)}
    name = next((n for n in PREDICTIONS if n in names), None)
    if name is None:
        raise SystemExit(f"run {run_id} has none of {', '.join(PREDICTIONS)}: did it reach its test scoring?")
    return mlflow.artifacts.load_text(f"runs:/{run_id}/{name}")


def _mean_epoch_seconds(run_id: str) -> float:
    """Mean wall time of the run's epochs (training pass plus dev scoring), from its `epoch/seconds` metric."""
    client = mlflow.MlflowClient()
    history = store.history(client, run_id, "seconds") or client.get_metric_history(run_id, "epoch_seconds")
    return statistics.fmean(m.value for m in history) if history else math.nan


def timing(rows: list[dict]) -> str:
    """The study's wall time (its MLflow parent run, start to end) against the sum of its runs' own durations."""
    parent_id = mlflow.get_run(rows[0]["run_id"]).data.tags.get("mlflow.parentRunId", "") if rows else ""
    if not parent_id:
        return ""
    parent = mlflow.get_run(parent_id)
    wall = (parent.info.end_time - parent.info.start_time) / 60_000
    summed = sum(r["run_minutes"] for r in rows)
    launch = dict(o.split("=", 1) for o in parent.data.tags.get("hydra_overrides", "").split() if "=" in o)
    side_by_side = launch.get("hydra/launcher") == "joblib"
    how = f"joblib, {launch.get('hydra.launcher.n_jobs', 'all cores')} at a time" if side_by_side else "one at a time"
    text = f"\nTime: the study took {wall:.1f} min of wall time ({how}); its {len(rows)} finished runs took"
    text += f" {summed:.1f} min added up, each from its MLflow run's start to its end"
    if side_by_side:
        text += (
            ", measured while another job ran beside it. That sum stands in for the serial time of the same runs"
            " (a run alone on this machine is somewhat faster than beside another, so the true serial time is"
            f" a little lower): {summed / wall:.2f}x the wall time. The wall time also holds what each job spent"
            " outside its MLflow run (starting a worker, reading the corpus and vectors); the sum does not.\n"
        )
    else:
        text += ", one after another in one process.\n"
    per_epoch = {}
    for row in rows:
        per_epoch.setdefault(setting_name(row["cell"], row["bidirectional"]), []).append(row["epoch_seconds"])
    threads = "/".join(sorted({r["threads"] for r in rows}))
    text += f"\nSeconds per epoch (training pass plus dev scoring, trainer.threads={threads}, mean over seeds and"
    text += " epochs): "
    text += ", ".join(f"{k} {_nanmean(v):.0f}" for k, v in per_epoch.items()) + ".\n"
    return text


def origin(rows: list[dict]) -> str:
    """Which sweep the numbers come from: its MLflow parent run and the overrides it was started with."""
    if not rows:
        return ""
    parent_id = mlflow.get_run(rows[0]["run_id"]).data.tags.get("mlflow.parentRunId", "")
    if not parent_id:
        return ""
    parent = mlflow.get_run(parent_id)
    exp = mlflow.get_experiment(parent.info.experiment_id).name
    overrides = " ".join(filter(None, [parent.data.tags.get("hydra_overrides"), parent.data.tags.get("overrides")]))
    return f"\n\nSweep: MLflow experiment `{exp}`, run `{parent_id}`, `-m {overrides}`."


def setting_name(cell: str, bidirectional: bool) -> str:
    return f"{'bi' if bidirectional else ''}{cell}"


def aggregate(rows: list[dict]) -> list[dict]:
    """Step 4: one row per (cell, direction), mean and sample std over seeds of every score."""
    keys = ["best_dev_f1", "test_f1", *(f"f1_{bucket_name(*b)}" for b in BUCKETS)]
    groups: dict[tuple[str, bool], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["cell"], row["bidirectional"]), []).append(row)
    order = {"rnn": 0, "gru": 1, "lstm": 2}
    table = []
    for (cell, bi), group in sorted(groups.items(), key=lambda kv: (kv[0][1], order.get(kv[0][0], 9))):
        out = {"setting": setting_name(cell, bi), "cell": cell, "bidirectional": bi, "seeds": len(group)}
        for key in keys:
            out[f"{key}_mean"], out[f"{key}_std"] = mean_std([r[key] for r in group])
        profiles = [r["_profile"] for r in group if "_profile" in r]
        if profiles:  # arithmetic mean over seeds, distance by distance
            out["_profile"] = [_nanmean([p[k] for p in profiles]) for k in range(len(profiles[0]))]
            out.update({f"grad_norm_d{k}": out["_profile"][k] for k in (0, *PROFILE_DISTANCES)})
        table.append(out)
    return table


def _sci(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.1e}"


def _nanmean(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def markdown(table: list[dict], rows: list[dict], title: str, command: str) -> str:
    """The results table, with the bucket sizes that each bucket's F1 rests on and the command that made it."""
    buckets = [bucket_name(*b) for b in BUCKETS]
    sizes = rows[0]["_sizes"] if rows else {}
    head = "| setting | seeds | dev F1 | test F1 | " + " | ".join(f"test F1, {b} tokens" for b in buckets) + " |\n"
    head += "|---|---|---|---|" + "---|" * len(buckets) + "\n"
    body = "".join(
        f"| {t['setting']} | {t['seeds']} | {fmt(t['best_dev_f1_mean'], t['best_dev_f1_std'])} | "
        f"{fmt(t['test_f1_mean'], t['test_f1_std'])} | "
        + " | ".join(fmt(t[f"f1_{b}_mean"], t[f"f1_{b}_std"]) for b in buckets)
        + " |\n"
        for t in table
    )
    text = f"# {title}\n\n{command}\n\nF1 in % (seqeval default mode), mean ± sample std over seeds.\n\n"
    text += head + body
    if sizes:
        text += "\nTest sentences (gold entities) per bucket: "
        text += ", ".join(f"{b}: {n} ({e})" for b, (n, e) in sizes.items()) + ".\n"
    if any("_profile" in t for t in table):
        text += "\nGradient reaching the input k tokens away: mean ||dL_t/dx_(t-k)|| at k=0, then relative to k=0"
        text += " (final models, longest test sentences; ner/gradients.py, study_gradients.png):\n\n"
        text += "| setting | k=0 | " + " | ".join(f"k={k} / k=0" for k in PROFILE_DISTANCES) + " |\n"
        text += "|---|---|" + "---|" * len(PROFILE_DISTANCES) + "\n"
        for t in table:
            base = t["_profile"][0]
            text += f"| {t['setting']} | {_sci(base)} | "
            text += " | ".join(_sci(t[f"grad_norm_d{k}"] / base) for k in PROFILE_DISTANCES) + " |\n"
    text += readme_table(table)
    return text


def readme_table(table: list[dict]) -> str:
    """The README's form: test F1 overall and by sentence length, and the gradient 20 tokens back."""
    if not table:
        return ""
    buckets = [bucket_name(*b) for b in BUCKETS]
    text = "\nFor the README:\n\n| setting | test F1 | " + " | ".join([f"{buckets[0]} tokens", *buckets[1:]])
    text += " | gradient at k=20 / k=0 |\n|---|---|" + "---|" * len(buckets) + "---|\n"
    for t in table:
        grad = _sci(t["grad_norm_d20"] / t["_profile"][0]) if "_profile" in t else "–"
        text += f"| {t['setting']} | {fmt(t['test_f1_mean'], t['test_f1_std'])} | "
        text += " | ".join(fmt(t[f"f1_{b}_mean"], t[f"f1_{b}_std"]) for b in buckets) + f" | {grad} |\n"
    return text


def write(out: Path, table: list[dict], rows: list[dict], title: str, command: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.md").write_text(markdown(table, rows, title, command), encoding="utf-8")
    public = [{k: v for k, v in t.items() if not k.startswith("_")} for t in table]
    (out / "study.csv").write_text(to_csv(public), encoding="utf-8")
    runs = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    (out / "study_runs.csv").write_text(to_csv(runs), encoding="utf-8")
    profiles = {t["setting"]: t["_profile"] for t in table if "_profile" in t}
    if profiles:
        plot_profiles(profiles, out / "study_gradients.png", "gradient vs distance, final models (mean over seeds)")
    print((out / "study.md").read_text(), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 training sentences, 5 epochs, hidden 100")
    parser.add_argument("--epochs", type=int, default=None, help=f"epochs per run (default {EPOCHS}; 5 with --quick)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time through joblib (1 = one after another)")
    parser.add_argument("--cells", default="rnn,gru,lstm")
    parser.add_argument("--directions", default="false,true", help="model.bidirectional values")
    parser.add_argument("--seeds", default=None, help="default: 1,2 with --quick, else 1,2,3")
    parser.add_argument("--experiment", default=None, help="MLflow experiment (default: study or study-quick)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default: the project's ./mlruns)")
    parser.add_argument("--out", type=Path, default=ROOT / "results", help="where study.md/.csv go")
    parser.add_argument("--sweep-dir", type=Path, default=None, help="reuse a finished sweep instead of training")
    parser.add_argument("--no-profiles", dest="profiles", action="store_false", help="skip gradient profiles")
    parser.add_argument("override", nargs="*", help="extra Hydra overrides for every run, e.g. trainer.threads=1")
    args = parser.parse_args(argv)
    args.seeds = args.seeds or ("1,2" if args.quick else "1,2,3")
    args.epochs = args.epochs or (5 if args.quick else EPOCHS)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars per downloaded artifact
    args.experiment = args.experiment or ("study-quick" if args.quick else "study")
    sweep_dir = args.sweep_dir
    if sweep_dir is None:
        sweep_dir = ROOT / "multirun" / f"{args.experiment}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_sweep(sweep_dir, args)
    torch.set_num_threads(1)  # the profiles are small; leave the other core to whoever shares the machine
    rows = collect(sweep_dir, args.tracking_uri, args.profiles)
    epochs = "/".join(str(e) for e in sorted({r["epochs"] for r in rows})) or "?"  # as the runs logged them
    if args.quick:
        title = f"Cell × direction study (QUICK: 2,000 training sentences, {epochs} epochs, hidden 100)"
    else:
        limit = max((r["max_train"] for r in rows), default=0)
        data = f"first {limit:,} training sentences" if limit else "whole CoNLL-2003 training set"
        title = f"Cell × direction study ({data}, default model, {epochs} epochs per run)"
    command = "`python -m pipelines.study " + " ".join(argv if argv is not None else sys.argv[1:]) + "`"
    command = command.replace(f"{ROOT}/", "")  # paths inside the project, as a user would type them
    write(args.out, aggregate(rows), rows, title, command + origin(rows) + "\n" + timing(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
