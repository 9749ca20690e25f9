"""Benchmark `engine=spark` (local[1], local[2]) against `engine=local` on the same input, in one run.

    python -m benchmarks.spark                       # 2,000,000 tokens, best:ner or the newest model in mlruns/
    python -m benchmarks.spark --tokens 500000 --model runs:/<id>/model --no-docs
    python -m benchmarks.spark --compare <rev> --tokens 200000 --rounds 1    # these runs with the code of <rev> too

The input is CoNLL-2003 training articles, one per line, repeated to `--tokens` tokens (`harness.write_input`).
Every run is a child process (`harness.run_tag`) that calls `ner.tagging.pipeline.tag` with the composed
`conf/tag` config, as the command would, and hands back tag()'s summary as JSON: engine=local (its defaults, and
workers=0 for one core), engine=spark at local[1] and local[2], and engine=spark local[2] on the first line alone,
whose time is the fixed start-up cost (JVM, session, Python workers, model load) that every Spark run pays. Prints
tokens/s, the ratios, the fixed cost and a cluster sizing estimate, logs them as run `spark` of MLflow experiment
`benchmarks` and writes them into docs/scale-out.md between markers.

With `--compare REV`, the local and Spark runs (not the fixed-cost one) are made with REV's code (a temporary git
worktree) and with this checkout's, in turn, `--rounds` times each; prints both tokens/s and new/old. Not a test:
it takes minutes and depends on what else runs.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from benchmarks import harness

DOCS = harness.ROOT / "docs" / "scale-out.md"
SECTION = "bench_spark"  # the markers in docs/scale-out.md
FIXED = "spark local[2], first line only (fixed cost)"
DOCUMENTS, TOKENS_PER_DOC = 50_000_000, 400  # the data lake the sizing is for


def main() -> None:
    args = parse()
    model = harness.absolute_model(args.model or harness.default_model(args.tracking_uri))
    load = [os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="bench-spark-") as tmp:
        news, first = Path(tmp) / "news.txt", Path(tmp) / "first.txt"
        tokens = harness.write_input(news, args.tokens, args.source, args.mib * 2**20 if args.mib else None)
        first.write_text(news.read_text(encoding="utf-8").split("\n", 1)[0] + "\n", encoding="utf-8")
        print(f"input: {news.stat().st_size / 2**20:.1f} MiB, {tokens:,} CoNLL tokens; model {model}", flush=True)
        base = {"model": model, "tracking_uri": harness.store_uri(args.tracking_uri), "input": str(news)}
        plan = {name: {**base, "one_per_line": True, "progress": False, **values} for name, values in runs(first)}
        if args.compare:
            del plan[FIXED]
            harness.compare(args.compare, plan, Path(tmp), args.rounds)
            return
        results = {}
        for n, (name, values) in enumerate(plan.items()):
            results[name] = harness.run_tag(harness.settings({**values, "output": str(Path(tmp) / f"out{n}")}))
            load.append(os.getloadavg())
            print(f"{name}: {results[name]['tokens']:,} tokens in {results[name]['seconds']:.1f} s", flush=True)
        same = same_lines(Path(tmp) / "out0", [Path(tmp) / "out2", Path(tmp) / "out3"])
    section = report(results, model, tokens, load, same)
    print("\n" + section)
    metrics = {f"{_key(n)}_tokens_per_s": harness.rate(r) for n, r in results.items()}
    params = {**harness.machine(), "model": model, "tokens": tokens}
    harness.log_run("spark", args.tracking_uri, params, metrics, section)
    if not args.no_docs:
        harness.write_section(SECTION, section, DOCS, "# Scale out\n")


def runs(first: Path) -> list[tuple[str, dict]]:
    """(name, `ner.tag` settings) of every run, in the order `report` reads them."""
    spark = {"engine": "spark", "+spark.conf.spark.ui.enabled": False}
    return [
        ("local (defaults)", {"engine": "local"}),
        ("local, workers=0 (one core)", {"engine": "local", "workers": 0, "threads": 1}),
        ("spark local[1]", {**spark, "spark.master": "local[1]"}),
        ("spark local[2]", {**spark, "spark.master": "local[2]"}),
        (FIXED, {**spark, "spark.master": "local[2]", "input": str(first)}),
    ]


def _key(name: str) -> str:
    return "_".join("".join(c if c.isalnum() else " " for c in name).split())


def parse() -> argparse.Namespace:
    ap = harness.parser("spark", __doc__)
    harness.add_tag_args(ap)
    ap.add_argument("--no-docs", action="store_true", help="do not rewrite docs/scale-out.md")
    harness.add_compare_args(ap)
    return ap.parse_args()


def same_lines(local: Path, folders: list[Path]) -> bool:
    """Whether every Spark output holds exactly the JSON lines of the local output (part files are unordered)."""
    expected = sorted(local.read_text(encoding="utf-8").splitlines())
    for folder in folders:
        lines = [line for p in folder.glob("part-*") for line in p.read_text(encoding="utf-8").splitlines()]
        if sorted(lines) != expected:
            return False
    return True


def report(results: dict, model: str, tokens: int, load: list[tuple], same: bool) -> str:
    """The markdown section: table, ratios, fixed cost and the sizing estimate."""
    local, one_core, spark1, spark2, fixed = results  # the run names, in the order of `main`
    tiny, info = results[fixed], harness.machine()
    rate = {n: harness.rate(r) for n, r in results.items()}
    core = {n: _per_core(results[n]) for n in (one_core, spark1, spark2)}
    rows = [
        f"| {n} | {r['documents']:,} | {r['tokens']:,} | {r['seconds']:.1f} | {r['process_seconds']:.1f} "
        f"| {rate[n]:,.0f} | {f'{core[n]:,.0f}' if n in core else ''} |"
        for n, r in results.items()
    ]
    per_core = min(core[spark1], core[spark2])
    lake = DOCUMENTS * TOKENS_PER_DOC
    sizing = [
        f"| {cores:,} | {lake / (cores * per_core) / 3600 + tiny['seconds'] / 3600:,.1f} |"
        for cores in (16, 64, 256, 1024)
    ]
    return "\n".join(
        [
            "## Measured: engine=spark against engine=local (`python -m benchmarks.spark`)",
            "",
            f"- date: {info['date']}; machine: {info['cpu']}, {info['cores']} cores, shared with other jobs",
            f"- load average (1, 5, 15 min): {harness.load_average(load[0])} at the start,"
            f" {harness.load_average(load[-1])} at the end",
            f"- input: {tokens:,} CoNLL tokens of CoNLL-2003 training articles, one per line; model `{model}`",
            f"- command: `{harness.command('spark')}`"
            + (" (fewer than the default 2,000,000 tokens: the CPU was shared)" if tokens < 2_000_000 else ""),
            "",
            "| run | documents | tokens | seconds | process s | tokens/s | tokens per busy core-second |",
            "|---|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
            '"seconds" is the time inside `ner.tagging.pipeline.tag()`, "process s" the whole command (interpreter,'
            " imports). Tokens per busy core-second: for Spark, tokens over the summed wall time of the tasks less"
            " the workers' model loads; for local workers=0, tokens over its time less the model load.",
            "",
            f"- fixed start-up cost of a Spark run (one document, local[2], after the other runs):"
            f" {tiny['seconds']:.1f} s inside `tag()` ({_stages(tiny)}), {tiny['process_seconds']:.1f} s for the"
            " whole process",
            f"- end to end, start-up included: spark local[1] / local (defaults) {rate[spark1] / rate[local]:.2f}x;"
            f" spark local[2] / local (defaults) {rate[spark2] / rate[local]:.2f}x; spark local[1] / local"
            f" workers=0 {rate[spark1] / rate[one_core]:.2f}x; spark local[2] / local[1]"
            f" {rate[spark2] / rate[spark1]:.2f}x",
            f"- per busy core: spark local[1] / local workers=0 {core[spark1] / core[one_core]:.2f}x",
            f"- the JSONL of both Spark runs has exactly the lines of engine=local (defaults): {same}",
            "",
            f"Sizing, from {per_core:,.0f} tokens/s per busy core (the lower of the two Spark runs):"
            f" {DOCUMENTS:,} documents of {TOKENS_PER_DOC} tokens ({lake / 1e9:.0f} G tokens) on N executor cores,"
            " one task slot and one torch thread per core, perfect scaling, plus the fixed cost once:",
            "",
            "| executor cores | hours |",
            "|---:|---:|",
            *sizing,
        ]
    )


def _per_core(result: dict) -> float:
    """Tokens per second of one busy core, start-up and model load left out."""
    if "worker_seconds" in result:
        return result["tokens"] / (result["worker_seconds"]["tasks"] - result["worker_seconds"]["model_load"])
    return result["tokens"] / (result["seconds"] - result["stage_seconds"]["load"])


def _stages(result: dict) -> str:
    return ", ".join(f"{k} {v:.1f} s" for k, v in result["stage_seconds"].items())


if __name__ == "__main__":
    main()
