"""The cell x direction x seed study, end to end: why gated cells, in F1 by sentence length and in gradients.

    python -m pipelines.study --quick          # ~15 min on 2 cores: 2,000 training sentences, 5 epochs, 2 seeds
    python -m pipelines.study                  # the full study: whole CoNLL-2003, default model, 3 seeds (hours)

Steps:
1. one Hydra sweep, `python -m ner.train -m model.cell=rnn,gru,lstm model.bidirectional=false,true seed=...`, so
   every run is a child of one MLflow parent run (ner/sweep.py) in experiment `study` (or `study-quick`);
2. for each finished run, its `test_predictions.conll` artifact is scored with seqeval per sentence-length bucket
   (1-10, 11-20, 21-40, 41+ tokens: where a vanilla RNN should lose is the long sentences);
3. for each finished run, the final model's gradient profile (ner/gradients.py) on the longest test sentences;
4. `results/study.md` and `results/study.csv`: mean ± sample std over seeds of dev F1, test F1 and test F1 per
   bucket for each setting, and `results/study_gradients.png`: the mean profile of each setting, log scale.

Scores are seqeval's default (conlleval-compatible) mode, as everywhere in the project. Settings are compared on
test F1 here because this is a study, not a model choice: choosing a model is promote.py's job, on dev F1.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
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
from ner.training.gradients import plot_profiles, profile_batch, timestep_grad_norms
from ner.training.sweep import fmt, mean_std, to_csv

ROOT = Path(__file__).resolve().parents[1]
BUCKETS = ((1, 10), (11, 20), (21, 40), (41, 10_000))  # sentence length in tokens, inclusive
PROFILE_DISTANCES = (1, 5, 10, 20, 40)  # gradient-norm columns of the Markdown table
QUICK = [
    "data.max_train_samples=2000",  # of 14,041; dev and test stay whole so every bucket is scored on all of it
    "trainer.max_epochs=5",
    "trainer.patience=0",
    "model.hidden_size=100",
]


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
        *_defaults_not_overridden(QUICK if args.quick else [], args.override),
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
    return [d for d in defaults if d.split("=", 1)[0] not in keys]


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
        text = mlflow.artifacts.load_text(f"runs:/{job['run_id']}/test_predictions.conll")
        sentences = read_predictions(text)
        row = {
            "cell": run.data.params["model.cell"],
            "bidirectional": run.data.params["model.bidirectional"] == "True",
            "seed": int(run.data.params["seed"]),
            "run_id": job["run_id"],
            "best_dev_f1": run.data.metrics["best_dev_f1"],
            "test_f1": run.data.metrics["test_f1"],
            **bucket_f1(sentences),
            "_sizes": bucket_sizes(sentences),
        }
        if profiles:
            t0 = time.perf_counter()
            row["_profile"] = gradient_profile(job["run_id"], sentences)
            print(f"gradient profile of {run.info.run_name}: {time.perf_counter() - t0:.1f} s", flush=True)
        rows.append(row)
    return rows


def origin(rows: list[dict]) -> str:
    """Which sweep the numbers come from: its MLflow parent run and the overrides it was started with."""
    if not rows:
        return ""
    parent_id = mlflow.get_run(rows[0]["run_id"]).data.tags.get("mlflow.parentRunId", "")
    if not parent_id:
        return ""
    parent = mlflow.get_run(parent_id)
    exp = mlflow.get_experiment(parent.info.experiment_id).name
    return f"\n\nSweep: MLflow experiment `{exp}`, run `{parent_id}`, `-m {parent.data.tags.get('overrides', '')}`."


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
    args.experiment = args.experiment or ("study-quick" if args.quick else "study")
    sweep_dir = args.sweep_dir
    if sweep_dir is None:
        sweep_dir = ROOT / "multirun" / f"{args.experiment}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_sweep(sweep_dir, args)
    torch.set_num_threads(1)  # the profiles are small; leave the other core to whoever shares the machine
    rows = collect(sweep_dir, args.tracking_uri, args.profiles)
    title = "Cell × direction study" + (
        " (QUICK: 2,000 training sentences, 5 epochs, hidden 100)" if args.quick else ""
    )
    command = "`python -m pipelines.study " + " ".join(argv if argv is not None else sys.argv[1:]) + "`"
    command = command.replace(f"{ROOT}/", "")  # paths inside the project, as a user would type them
    write(args.out, aggregate(rows), rows, title, command + origin(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
