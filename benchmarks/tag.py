"""Benchmark bulk tagging end to end: tokens/s, peak memory, and where the time goes.

    python pipelines/bench_tag.py                          # best:ner, or the newest run with a model in ./mlruns
    python pipelines/bench_tag.py --model runs:/<id>/model --tokens 2000000 --threads 2
    python pipelines/bench_tag.py --mib 1024 --model <small model>    # a 1 GiB file: memory stays flat

The input is the CoNLL-2003 training text, detokenised to one news article per line and repeated until it holds
`--tokens` tokens; `python -m ner.tag ... one_per_line=true` is then run on it in a child process (so that the
peak memory is the tagger's alone), and the stage timings it records are printed as a table. Not a test: it
takes a minute or more, and its numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONLL_TRAIN = ROOT.parent / "shared" / "data" / "conll2003" / "train.txt"
STAGES = {
    "load": "model load (MLflow import, download, build)",
    "read": "read + decode input",
    "tokenise": "tokenise + split sentences",
    "features": "form table (word, case, chars)",
    "model": "batching + embeddings + BiLSTM + projection",
    "decode": "Viterbi + IOB2 + entity spans",
    "wait": "waiting for workers (workers > 0)",
    "records": "build records",
    "write": "serialise + write",
}
HOW_TO_GET_A_MODEL = """no model found: pass --model runs:/<run_id>/model (or models:/..., best:<experiment>, a folder).
To make one in ./mlruns:
  python -m ner.train                                   # the default model (BiLSTM-CNN-CRF, GloVe 50d)
  python -m ner.train trainer.max_epochs=1 tracking.experiment=bench-tmp trainer.threads=1   # same size, ~2 min"""


def main() -> None:
    args = _parse()
    if args.child:
        _child(args)
        return
    model = args.model or _default_model(args.tracking_uri)
    with tempfile.TemporaryDirectory(prefix="bench-tag-") as tmp:
        source = Path(tmp) / "news.txt"
        tokens = write_input(source, args.tokens, args.source, args.mib * 2**20 if args.mib else None)
        print(f"input: {source.stat().st_size / 2**20:.1f} MiB, {tokens:,} CoNLL tokens, model {model}", flush=True)
        result = _run_child(args, model, source, Path(tmp) / "out")
    print_table(result, args)


def add_input_args(parser: argparse.ArgumentParser) -> None:
    """The model and input options every tagging benchmark shares (bench_tag, bench_spark)."""
    parser.add_argument("--model", help="model URI (default: best:ner, else the newest run with a model)")
    parser.add_argument("--tracking-uri", help="MLflow store (default: ./mlruns/mlflow.db)")
    parser.add_argument("--tokens", type=int, default=2_000_000, help="input size in tokens (default 2,000,000)")
    parser.add_argument("--mib", type=float, help="input size in MiB instead of tokens, e.g. 1024 for 1 GiB")
    parser.add_argument("--source", type=Path, default=CONLL_TRAIN, help="CoNLL file to detokenise")


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_input_args(parser)
    parser.add_argument("--threads", type=int, help="torch threads with --workers 0 (0 = one per core)")
    parser.add_argument("--workers", type=int, help="model worker processes (1 thread each; 0 = none)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--max-tokens", type=int)
    parser.add_argument("--chunk-chars", type=int)
    parser.add_argument("--precision", choices=("fp32", "bf16"))
    parser.add_argument("--output-format", choices=("jsonl", "conll", "spans"))
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time stages in CPU seconds of the main thread (with --threads 1: the cost of each stage even while"
        " other jobs share the cores)",
    )
    parser.add_argument("--child", nargs=2, metavar=("INPUT", "OUTPUT"), help=argparse.SUPPRESS)
    return parser.parse_args()


def write_input(path: Path, tokens: int, source: Path, size: float | None = None) -> int:
    """One detokenised CoNLL-2003 article per line, repeated to at least `tokens` tokens (or `size` bytes, if
    given); returns the token count."""
    if not source.is_file():
        sys.exit(f"{source} not found: pass --source <CoNLL file> (the CoNLL-2003 train split is the default)")
    articles, sizes = conll_articles(source)
    total, written = 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while (written < size) if size else (total < tokens):
            for line, n in zip(articles, sizes, strict=True):
                written += f.write(line + "\n")  # characters: the text is ASCII but for a few names
                total += n
                if (written >= size) if size else (total >= tokens):
                    break
    return total


def conll_articles(source: Path) -> tuple[list[str], list[int]]:
    articles, sizes, current, sentence = [], [], [], []
    for line in source.read_text(encoding="utf-8").splitlines() + ["-DOCSTART-"]:
        cols = line.split()
        if cols and cols[0] != "-DOCSTART-":
            sentence.append(cols[0])
            continue
        if sentence:
            current.append(sentence)
            sentence = []
        if cols and current:
            articles.append(" ".join(_detokenise(s) for s in current))
            sizes.append(sum(map(len, current)))
            current = []
    return articles, sizes


def _detokenise(tokens: list[str]) -> str:
    text = " ".join(tokens)
    text = re.sub(r" ([.,;:!?%)\]}])", r"\1", text)
    text = re.sub(r"([(\[{$]) ", r"\1", text)
    return re.sub(r" ('s|n't|'re|'ve|'ll|'d|'m)\b", r"\1", text)


def _default_model(tracking_uri: str | None) -> str:
    """best:ner, else the newest finished run of any experiment that logged a model; else how to get one."""
    from ner.tracking import model_uri

    try:
        return model_uri.best_run_uri("ner", tracking_uri)
    except model_uri.ModelError:
        pass
    import mlflow

    with model_uri._store(tracking_uri):
        runs = mlflow.search_runs(
            search_all_experiments=True,
            filter_string="attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            output_format="list",
        )
    for run in runs:
        uri = f"runs:/{run.info.run_id}/model"
        try:
            with model_uri.resolve(uri, tracking_uri):
                return uri
        except model_uri.ModelError:
            continue  # a run that logged no model
    sys.exit(HOW_TO_GET_A_MODEL)


def _run_child(args: argparse.Namespace, model: str, source: Path, output: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", str(source), str(output), "--model", model]
    if args.cpu_time:
        cmd.append("--cpu-time")
    for flag in (
        "tracking_uri",
        "threads",
        "workers",
        "batch_size",
        "max_tokens",
        "chunk_chars",
        "precision",
        "output_format",
    ):
        value = getattr(args, flag)
        if value is not None:
            cmd += [f"--{flag.replace('_', '-')}", str(value)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.exit(proc.returncode)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_seconds"] = wall
    result["output_mib"] = output.stat().st_size / 2**20 if output.exists() else 0.0
    return result


def _child(args: argparse.Namespace) -> None:
    """Runs in the child: tag the file and print the summary (plus peak RSS) as the last line of stdout."""
    if args.cpu_time:
        time.perf_counter = time.thread_time  # every stage timer in ner.tag / ner.annotate now counts CPU time
    from ner.tagging.pipeline import TagConfig, tag

    knobs = ("output_format", "batch_size", "max_tokens", "chunk_chars", "threads", "workers", "precision")
    chosen = {k: getattr(args, k) for k in knobs if getattr(args, k) is not None}  # the rest: TagConfig defaults
    cfg = TagConfig(
        model=args.model,
        input=args.child[0],
        output=args.child[1],
        one_per_line=True,
        tracking_uri=args.tracking_uri,
        progress=sys.stderr.isatty(),
        **chosen,
    )
    import torch

    summary = tag(cfg)
    summary["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    summary["peak_rss_worker_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    summary["threads"] = torch.get_num_threads()
    summary["config"] = dataclasses.asdict(cfg)
    usage, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    summary["process_cpu_seconds"] = usage.ru_utime + usage.ru_stime
    summary["worker_cpu_seconds"] = children.ru_utime + children.ru_stime
    print(json.dumps(summary))


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
        f" {', '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores"
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
