"""How far averaging several trained models goes on CoNLL-2003 (GitHub issue 5: where the accuracy ceiling is).

    python pipelines/bench_ensemble.py --configs full-budget,long        # stored runs of `bench_accuracy.py`

Trains nothing: it loads the logged models of each config's seeds (experiment `accuracy`, run names
`<config>-s<seed>`, as `bench_accuracy.py --from-store` finds them) and scores, on dev and test, every single
model, every pair, and all of a config's seeds together, then all models of all the configs. An ensemble adds
its members' emission scores and CRF transition scores and takes the Viterbi path of the averages (log-linear
pooling: one decode, the same constraints). The point is a bound, not a product feature: if even several
30-minute models together stay below a target, no single model of that architecture and those vectors is
likely to reach it. The table is printed, logged as run `ensemble` of experiment `benchmarks` and written between
the `ensemble` markers of docs/benchmarks.md (unless --no-docs).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import shlex
import sys
from pathlib import Path

import torch
from bench_accuracy import ANCHORS, TARGETS, stored_jobs
from docs_section import machine, replace_section

from ner.data.batching import Batch
from ner.data.corpus import DataConfig, load_corpus, tag_strings
from ner.evaluation import metrics
from ner.model.engine import predict_tags
from ner.model.tagger import Tagger
from ner.tracking import model_uri, store
from ner.training.sweep import fmt, mean_std

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- ensemble:begin -->", "<!-- ensemble:end -->"


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="full-budget", help="comma-separated config names of stored runs")
    ap.add_argument("--experiment", default="accuracy", help="MLflow experiment of the training runs")
    ap.add_argument("--tracking-uri", help="MLflow store (default: the project store, ./mlruns/mlflow.db)")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "conll2003"), help="CoNLL-2003 folder")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    return ap.parse_args()


class Averaged(torch.nn.Module):
    """Members' emission scores and CRF parameters averaged (log-linear pooling): `predict_tags` reads it as one
    `Tagger`, so it is decoded, read in context and split back per sentence exactly as a single model is."""

    decode = Tagger.decode

    def __init__(self, members: list[Tagger]):
        super().__init__()
        self.members = torch.nn.ModuleList(members)
        self.cfg, self.featurizer = members[0].cfg, members[0].featurizer
        self.crf = copy.deepcopy(members[0].crf)
        with torch.no_grad():
            for name, param in self.crf.named_parameters():
                param.copy_(torch.stack([m.crf.get_parameter(name) for m in members]).mean(0))

    def emissions(self, batch: Batch) -> torch.Tensor:
        return torch.stack([m.emissions(batch) for m in self.members]).mean(0)


def load_members(jobs, uri: str | None) -> list[Tagger]:
    members = []
    for job in jobs:
        with model_uri.resolve(f"runs:/{job.run_id}/model", uri) as folder:
            members.append(model_uri.load_folder(folder).eval())
    first = members[0]
    for job, m in zip(jobs, members, strict=True):
        if m.featurizer.to_json() != first.featurizer.to_json() or m.cfg.context_tokens != first.cfg.context_tokens:
            sys.exit(f"{job.config}-s{job.seed}: other vocabularies or context than the first model; cannot average")
    return members


def score(members: list[Tagger], data: dict) -> dict[str, float]:
    model = Averaged(members)
    return {split: metrics.score(gold, predict_tags(model, enc))["f1"] for split, (enc, gold) in data.items()}


def groups(configs: list[str], jobs) -> list[tuple[str, list[int]]]:
    """(name, member indices): each config's seeds, then all configs together when there are several."""
    out = [(c, [i for i, j in enumerate(jobs) if j.config == c]) for c in configs]
    return out + ([(" and ".join(configs), list(range(len(jobs))))] if len(configs) > 1 else [])


def report(rows: list[dict], info: dict, command: str) -> str:
    lines = [
        f"Measured {info['date']} on {info['cpu']} ({info['cores']} cores), torch {info['torch']}.",
        "",
        f"    {command}",
        "",
        "| models | n | single test F1 (mean ± std) | pairs test F1 (mean ± std) | all n: test F1 | all n: dev F1 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['n']} | {fmt(*mean_std(r['single']))} | {fmt(*mean_std(r['pairs']))} "
            f"| {r['all']['test']:.2f} | {r['all']['validation']:.2f} |"
        )
    anchors = ", ".join(f"{k} {v:.2f}" for k, v in ANCHORS.items())
    lines += ["", f"Targets for one model: best ≥ {TARGETS['best']}, mean ≥ {TARGETS['mean']}. Anchors: {anchors}."]
    return "\n".join(lines)


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    info = machine()
    command = "python pipelines/bench_ensemble.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    store.connect(store.TrackingConfig(uri=args.tracking_uri, experiment=args.experiment))
    configs = args.configs.split(",")
    jobs = [j for j in stored_jobs(args.experiment, {}) if j.config in configs]
    jobs.sort(key=lambda j: (configs.index(j.config), j.seed))
    missing = [c for c in configs if not any(j.config == c for j in jobs)]
    if missing:
        sys.exit(f"no finished runs named <config>-s<seed> for {', '.join(missing)} in experiment {args.experiment}")
    members = load_members(jobs, args.tracking_uri)
    corpus, _ = load_corpus(DataConfig(path=args.data))
    data = {}
    for split in ("validation", "test"):
        ds = corpus[split]
        data[split] = (members[0].featurizer.encode(ds["tokens"], documents=ds["document"]), tag_strings(ds))
    singles = [score([m], data) for m in members]
    rows = []
    for name, idx in groups(configs, jobs):
        pairs = [score([members[a], members[b]], data)["test"] for a, b in itertools.combinations(idx, 2)]
        rows.append(
            {
                "name": name,
                "n": len(idx),
                "single": [singles[i]["test"] for i in idx],
                "pairs": pairs or [float("nan")],
                "all": score([members[i] for i in idx], data),
            }  # fmt: skip
        )
        print(f"{name}: {len(idx)} models, all together: test {rows[-1]['all']['test']:.2f}", flush=True)
    section = report(rows, info, command)
    print("\n" + section)
    import mlflow

    cfg = store.TrackingConfig(uri=args.tracking_uri, experiment="benchmarks", run_name="ensemble", log_model=False)
    with store.run(cfg, "ensemble", {"benchmark": "ensemble", "git_commit": store.git_commit()}):
        mlflow.log_params({**{k: str(v) for k, v in info.items()}, "runs": " ".join(j.run_id for j in jobs)})
        mlflow.log_metrics({f"{r['name'].replace(' ', '_')}_all_test_f1": r["all"]["test"] for r in rows})
        mlflow.log_text(section, "ensemble.md")
    if not args.no_docs:
        replace_section(DOCS, BEGIN, END, "## Ensembles: the ceiling of these models\n\n" + section, "# Benchmarks\n")
        print(f"wrote the ensemble section of {DOCS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
