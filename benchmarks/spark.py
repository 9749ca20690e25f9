"""Benchmark `engine=spark` (local[1], local[2]) against `engine=local` on the same input, in one run.

    python pipelines/bench_spark.py                       # 2,000,000 tokens, the newest model in ./mlruns
    python pipelines/bench_spark.py --tokens 500000 --model runs:/<id>/model --no-docs

The input is CoNLL-2003 training articles, one per line, repeated to `--tokens` tokens (`bench_tag.write_input`).
Every run is a child process that calls `ner.tag.tag` with the composed `conf/tag` config, as the command would:
engine=local (its defaults, and workers=0 for one core), engine=spark at local[1] and local[2], and engine=spark
local[2] on the first line alone, whose time is the fixed start-up cost (JVM, session, Python workers, model load)
that every Spark run pays. Prints tokens/s, the ratios, the fixed cost and a cluster sizing estimate, and writes
them into docs/scale-out.md between markers. Not a test: it takes minutes and depends on what else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tag import _default_model, add_input_args, write_input  # noqa: E402
from docs_section import replace_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "scale-out.md"
BEGIN, END = "<!-- bench_spark:begin -->", "<!-- bench_spark:end -->"
SPARK = ["engine=spark", "+spark.conf.spark.ui.enabled=false"]
DOCUMENTS, TOKENS_PER_DOC = 50_000_000, 400  # the data lake


def main() -> None:
    args = parse()
    if args.child:
        child(json.loads(args.child))
        return
    model = args.model or _default_model(args.tracking_uri)
    load = [os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="bench-spark-") as tmp:
        news, first = Path(tmp) / "news.txt", Path(tmp) / "first.txt"
        tokens = write_input(news, args.tokens, args.source)
        first.write_text(news.read_text(encoding="utf-8").split("\n", 1)[0] + "\n", encoding="utf-8")
        print(f"input: {news.stat().st_size / 2**20:.1f} MiB, {tokens:,} CoNLL tokens; model {model}", flush=True)
        runs = {
            "local (defaults)": ["engine=local"],
            "local, workers=0 (one core)": ["engine=local", "workers=0", "threads=1"],
            "spark local[1]": [*SPARK, "spark.master='local[1]'"],
            "spark local[2]": [*SPARK, "spark.master='local[2]'"],
            "spark local[2], first line only (fixed cost)": [*SPARK, "spark.master='local[2]'", f"input={first}"],
        }
        results = {}
        for n, (name, overrides) in enumerate(runs.items()):
            base = [f"model={model}", f"input={news}", f"output={Path(tmp) / f'out{n}'}", "one_per_line=true"]
            results[name] = run_child([*base, *overrides, "progress=false"], args.tracking_uri)
            load.append(os.getloadavg())
            print(f"{name}: {results[name]['tokens']:,} tokens in {results[name]['seconds']:.1f} s", flush=True)
        same = same_lines(Path(tmp) / "out0", [Path(tmp) / "out2", Path(tmp) / "out3"])
    section = report(results, model, tokens, load, same)
    print("\n" + section)
    if not args.no_docs:
        write_docs(section)


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_input_args(ap)
    ap.add_argument("--no-docs", action="store_true", help="do not rewrite docs/scale-out.md")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    return ap.parse_args()


def run_child(overrides: list[str], tracking_uri: str | None) -> dict:
    """One run in a fresh process (a fresh JVM for Spark); its summary plus the process wall time."""
    if tracking_uri:
        overrides = [*overrides, f"tracking_uri={tracking_uri}"]
    start = time.perf_counter()
    cmd = [sys.executable, __file__, "--child", json.dumps(overrides)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    if proc.returncode:
        sys.exit(proc.returncode)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - start
    return result


def child(overrides: list[str]) -> None:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from ner.tagging.pipeline import TagConfig, tag

    with initialize_config_dir(config_dir=str(ROOT / "conf" / "tag"), version_base="1.3"):
        cfg = TagConfig(**OmegaConf.to_container(compose(config_name="tag", overrides=overrides), resolve=True))
    summary = tag(cfg)
    keys = ("documents", "tokens", "entities", "seconds", "stage_seconds", "worker_seconds")
    print(json.dumps({k: summary[k] for k in keys if k in summary}))


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
    tiny = results[fixed]
    rate = {n: r["tokens"] / r["seconds"] for n, r in results.items()}
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
            "## Measured: engine=spark against engine=local (`pipelines/bench_spark.py`)",
            "",
            f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}; machine: {os.cpu_count()} cores, shared with other jobs",
            f"- load average (1, 5, 15 min): {_load(load[0])} at the start, {_load(load[-1])} at the end",
            f"- input: {tokens:,} CoNLL tokens of CoNLL-2003 training articles, one per line; model `{model}`",
            f"- command: `python pipelines/bench_spark.py --tokens {tokens}`"
            + (" (fewer than the default 2,000,000: the CPU was shared)" if tokens < 2_000_000 else ""),
            "",
            "| run | documents | tokens | seconds | process s | tokens/s | tokens per busy core-second |",
            "|---|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
            '"seconds" is the time inside `ner.tag.tag()`, "process s" the whole command (interpreter, imports).'
            " Tokens per busy core-second: for Spark, tokens over the summed wall time of the tasks less the workers'"
            " model loads; for local workers=0, tokens over its time less the model load.",
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


def _load(values: tuple) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def write_docs(section: str) -> None:
    """Replace the measured section of docs/scale-out.md (appended if its markers are missing)."""
    replace_section(DOCS, BEGIN, END, section, "# Scale out\n")


if __name__ == "__main__":
    main()
