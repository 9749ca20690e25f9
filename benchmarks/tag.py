"""Benchmark bulk tagging end to end: tokens/s, peak memory, and where the time goes.

    python -m benchmarks.tag                          # best:ner, or the newest run with a model in mlruns/
    python -m benchmarks.tag --model runs:/<id>/model --tokens 2000000 --threads 2
    python -m benchmarks.tag --mib 1024 --model <small model>    # a 1 GiB file: memory stays flat
    python -m benchmarks.tag --compare <rev> --tokens 200000     # this checkout against the code of commit <rev>

The input is the CoNLL-2003 training text, detokenised to one news article per line and repeated until it holds
`--tokens` tokens; `ner.tag`'s work (`ner.tagging.pipeline.tag`, `one_per_line=true`) then runs on it in a child
process (so that the peak memory is the tagger's alone), which hands back tag()'s summary as JSON, and the stage
timings it records are printed as a table.

With `--compare REV`, the same input is tagged by REV's code (checked out in a temporary git worktree) and by this
checkout's, in turn, `--rounds` times each, for `threads=1 workers=0` (one core) and for the `ner.tag` defaults
(with any knobs given here): both tokens/s and new/old are printed, and whether both wrote the same records.
Not a test: it takes a minute or more, and its numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from benchmarks import harness

STAGES = {
    "load": "model load (MLflow import, download, build)",
    "read": "read + decode input",
    "tokenise": "tokenise + split sentences",
    "features": "form table (word, case, chars)",
    "model": "batching + embeddings + BiLSTM + projection",
    "decode": "Viterbi + IOB2 + entity spans",
    "scores": "entity scores (forward-backward, span marginals)",
    "wait": "waiting for workers (workers > 0)",
    "records": "build records",
    "write": "serialise + write",
}
KNOBS = ("threads", "workers", "batch_size", "max_tokens", "chunk_chars", "precision", "output_format")


def main() -> None:
    args = parse()
    model = harness.absolute_model(args.model or harness.default_model(args.tracking_uri))
    with tempfile.TemporaryDirectory(prefix="bench-tag-") as tmp:
        source = Path(tmp) / "news.txt"
        tokens = harness.write_input(source, args.tokens, args.source, args.mib * 2**20 if args.mib else None)
        print(f"input: {source.stat().st_size / 2**20:.1f} MiB, {tokens:,} CoNLL tokens, model {model}", flush=True)
        chosen = {k: getattr(args, k) for k in KNOBS if getattr(args, k) is not None}  # the rest: conf/tag defaults
        base = {"model": model, "tracking_uri": harness.store_uri(args.tracking_uri), "input": str(source)}
        base["one_per_line"] = True
        if args.compare:
            knobs = " ".join(harness.settings(chosen))
            runs = {
                "threads=1 workers=0": {**base, **chosen, "threads": 1, "workers": 0},
                f"ner.tag defaults{f' + {knobs}' if knobs else ''}": {**base, **chosen},
            }
            harness.compare(args.compare, runs, Path(tmp), args.rounds)
            return
        output = Path(tmp) / "out"
        values = {**base, **chosen, "output": str(output), "progress": sys.stderr.isatty()}
        result = harness.run_tag(harness.settings(values), cpu_time=args.cpu_time, capture=False)
        result["output_mib"] = output.stat().st_size / 2**20 if output.exists() else 0.0
    print_table(result, args)


def parse() -> argparse.Namespace:
    parser = harness.parser("tag", __doc__)
    harness.add_tag_args(parser)
    parser.add_argument("--threads", type=int, help="torch threads with --workers 0 (0 = one per core)")
    parser.add_argument("--workers", type=int, help="model worker processes (1 thread each; 0 = none)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--max-tokens", type=int)
    parser.add_argument("--chunk-chars", type=int)
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--output-format", choices=("jsonl", "conll", "spans"))
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time stages in CPU seconds of the main thread (with --threads 1: the cost of each stage even while"
        " other jobs share the cores)",
    )
    harness.add_compare_args(parser)
    return parser.parse_args()


def print_table(result: dict, args: argparse.Namespace) -> None:
    tokens, seconds, cfg = result["tokens"], result["seconds"], result["config"]
    cpu = result["process_cpu_seconds"] + result["worker_cpu_seconds"]
    workers = f" (+ {result['peak_rss_worker_mib']:,.0f} MiB per worker)" if cfg["workers"] else ""
    print(f"\n{result['documents']:,} documents, {tokens:,} tokens, {result['entities']:,} entities")
    print(
        f"end to end: {tokens / seconds:,.0f} tokens/s ({seconds:.1f} s in tag(), model load included;"
        f" {result['process_seconds']:.1f} s with interpreter start), peak RSS {result['peak_rss_mib']:,.0f} MiB"
        f"{workers}, output {result['output_mib']:,.0f} MiB ({cfg['output_format']})"
    )
    print(
        f"CPU time: {result['process_cpu_seconds']:.1f} s main + {result['worker_cpu_seconds']:.1f} s workers ="
        f" {tokens / cpu:,.0f} tokens per CPU-second (start-up included; a measure that holds while other jobs"
        " share the cores)"
    )
    print(
        f"workers {cfg['workers']}, threads {result['threads']}, batch_size {cfg['batch_size']}, max_tokens"
        f" {cfg['max_tokens']}, chunk_chars {cfg['chunk_chars']}, {cfg['precision']}; load average now:"
        f" {harness.load_average()} on {os.cpu_count()} cores"
    )
    clock = "CPU seconds of the main thread" if args.cpu_time else "wall-clock seconds"
    stages = result["stage_seconds"]
    in_workers = {"features", "model", "decode"} if cfg["workers"] else set()
    main = {k: v for k, v in stages.items() if k not in in_workers}
    rows = [(k, STAGES[k], v, "main") for k, v in main.items()]
    rows.append(("other", "planning, chunking, progress bar, bookkeeping", seconds - sum(main.values()), "main"))
    rows += [(k, STAGES[k], stages[k], "workers") for k in STAGES if k in in_workers]
    print(f"\nstages in {clock}; worker rows: busy time summed over the workers, overlapping the main process\n")
    print(f"| {'stage':<8} | {'where':<7} | {'what':<44} | {'seconds':>8} | {'share':>6} | {'us/token':>8} |")
    print(f"|{'-' * 10}|{'-' * 9}|{'-' * 46}|{'-' * 9}:|{'-' * 7}:|{'-' * 9}:|")
    for name, what, value, where in rows:
        print(
            f"| {name:<8} | {where:<7} | {what:<44} | {value:8.2f} | {100 * value / seconds:5.1f}% |"
            f" {1e6 * value / tokens:8.2f} |"
        )


if __name__ == "__main__":
    main()
