"""How far averaging several trained models goes on CoNLL-2003: where the accuracy ceiling of these models is.

    python -m benchmarks.ensemble --configs full-budget,long        # stored runs of `python -m benchmarks.accuracy`

Trains nothing: it loads the logged models of each config's seeds (experiment `accuracy`, run names
`<config>-s<seed>`, as `python -m benchmarks.accuracy --from-store` finds them) and scores, on dev and test, every
single model, every pair, and all of a config's seeds together, then all models of all the configs. An ensemble
(`ner.model.ensemble.Averaged`) adds its members' emission scores and CRF transition scores and takes the Viterbi
path of the averages (log-linear pooling: one decode, the same constraints), decoded by the one inference engine
(`ner.model.engine.Engine`), in document context where the models were trained with it. The point is a bound, not
a product feature: if even several 30-minute models together stay below a target, no single model of that
architecture and those vectors is likely to reach it. The table is printed, logged as run `ensemble` of experiment
`benchmarks` and written between the `ensemble` markers of docs/benchmarks.md (unless --no-docs).
"""

from __future__ import annotations

import argparse
import itertools
import sys

import torch

from benchmarks import harness
from benchmarks.accuracy import ANCHORS, TARGETS, stored_jobs
from ner.data.corpus import DataConfig, Sentences, load_corpus
from ner.evaluation import metrics
from ner.model.engine import Engine
from ner.model.ensemble import Averaged
from ner.model.tagger import Tagger
from ner.tracking import model_uri
from ner.training.sweep import fmt, mean_std


def parse() -> argparse.Namespace:
    ap = harness.parser("ensemble", __doc__)
    harness.add_stored_runs_args(ap, "comma-separated config names of stored runs")
    ap.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    return ap.parse_args()


def load_members(jobs, uri: str) -> list[Tagger]:
    members = []
    for job in jobs:
        with model_uri.resolve(f"runs:/{job.run_id}/model", uri) as folder:
            members.append(model_uri.load_folder(folder).eval())
    try:
        Averaged(members)  # the same vocabularies, labels, scheme and context, or no ensemble
    except ValueError as err:
        sys.exit(f"{', '.join(f'{j.config}-s{j.seed}' for j in jobs)}: {err}")
    return members


def score(members: list[Tagger], data: dict[str, Sentences]) -> dict[str, float]:
    """Entity F1 on each split of the members averaged (one member: the model itself, through the same path)."""
    engine = Engine(Averaged(members))
    return {split: metrics.score(s.gold, engine.predict(s.tokens, s.documents))["f1"] for split, s in data.items()}


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
    lines += [
        "",
        f"Targets for one model (mean of 3 seeds): ≥ {TARGETS['train']} trained on train, ≥ "
        f"{TARGETS['train + dev']} on train + dev. Anchors: {anchors}.",
    ]
    return "\n".join(lines)


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    info = harness.machine()
    uri = harness.connect(args.tracking_uri, args.experiment)
    configs = args.configs.split(",")
    jobs = [j for j in stored_jobs(args.experiment, {}) if j.config in configs]
    jobs.sort(key=lambda j: (configs.index(j.config), j.seed))
    missing = [c for c in configs if not any(j.config == c for j in jobs)]
    if missing:
        sys.exit(f"no finished runs named <config>-s<seed> for {', '.join(missing)} in experiment {args.experiment}")
    members = load_members(jobs, uri)
    corpus, _ = load_corpus(DataConfig(path=args.data))
    data = {split: Sentences.of(corpus[split]) for split in ("validation", "test")}
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
    section = "## Ensembles: the ceiling of these models\n\n" + report(rows, info, harness.command("ensemble"))
    print("\n" + section)
    params = {**info, "runs": " ".join(j.run_id for j in jobs)}
    metrics_ = {f"{r['name'].replace(' ', '_')}_all_test_f1": r["all"]["test"] for r in rows}
    harness.log_run("ensemble", args.tracking_uri, params, metrics_, section)
    if not args.no_docs:
        harness.write_section("ensemble", section)


if __name__ == "__main__":
    main()
