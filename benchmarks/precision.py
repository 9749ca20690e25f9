"""What `ner.tag precision=bf16` costs in accuracy and gains in speed, next to fp32, with one trained model.

    python -m benchmarks.precision [--model best:accuracy] [--tokens 1000000]

Accuracy: `ner.tag`'s work with `input_format=conll` on the CoNLL-2003 test file in each precision; it scores the
predictions against the file's gold column (conlleval-compatible), and the scores are read from the summary that
tag() returns. Speed: `ner.tag` with its defaults on a raw-text file of detokenised CoNLL-2003 articles, in each
precision, tokens/s inside tag(). Every run is a child process (`harness.run_tag`). `precision=auto` (the default)
picks bf16 only where the CPU has native bfloat16; this shows whether that choice is worth its accuracy. Logs run
`precision` of MLflow experiment `benchmarks` and writes the `precision` section of docs/benchmarks.md.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from benchmarks import harness

TEST = harness.CONLL / "test.txt"


def main() -> None:
    ap = harness.parser("precision", __doc__)
    ap.add_argument("--model", default="best:accuracy", help="model URI (default: the best run of `accuracy`)")
    ap.add_argument("--tracking-uri", help="MLflow store (default: the project store, mlruns/mlflow.db)")
    ap.add_argument("--tokens", type=int, default=1_000_000, help="raw text size for the speed rows")
    ap.add_argument("--rounds", type=int, default=2, help="speed is the best of this many runs")
    ap.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = ap.parse_args()
    if not TEST.is_file():
        raise SystemExit(f"{TEST} not found: this benchmark needs the CoNLL-2003 folder")
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    base = {"model": harness.absolute_model(args.model), "tracking_uri": harness.store_uri(args.tracking_uri)}
    base["progress"] = False
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        text = tmp / "news.txt"
        tokens = harness.write_input(text, args.tokens)
        for precision in ("fp32", "bf16"):
            test = {**base, "input": str(TEST), "input_format": "conll", "output": str(tmp / "test.jsonl")}
            scores = harness.run_tag(harness.settings({**test, "precision": precision}))["scores"]
            speed = {**base, "input": str(text), "one_per_line": True, "output": str(tmp / "out.jsonl")}
            rate = max(
                harness.rate(harness.run_tag(harness.settings({**speed, "precision": precision})))
                for _ in range(args.rounds)
            )
            rows.append((precision, scores["f1"], scores["f1_strict"], rate))
            print(f"{precision}: test F1 {scores['f1']:.2f} (strict {scores['f1_strict']:.2f}), {rate:,.0f} tokens/s")
    info = harness.machine()
    lines = [
        "## Tagging precision (fp32 vs bf16)",
        "",
        f"Model `{args.model}`; {info['cpu']}, {info['cores']} cores, torch {info['torch']}, {info['date']}; "
        f"native bfloat16 on this CPU: {'yes' if native else 'no'} (so `precision=auto` runs "
        f"{'bf16' if native else 'fp32'}).",
        "",
        f"    {harness.command('precision')}",
        "",
        f"| precision | CoNLL-2003 test F1 | strict | {tokens:,}-token text, `ner.tag` defaults, tokens/s |",
        "|---|---:|---:|---:|",
        *(f"| {p} | {f1:.2f} | {strict:.2f} | {speed:,.0f} |" for p, f1, strict, speed in rows),
        "",
        f"bf16 vs fp32: F1 {rows[1][1] - rows[0][1]:+.2f}, speed {rows[1][3] / rows[0][3]:.2f}x.",
    ]
    section = "\n".join(lines)
    print(section)
    metrics = {f"{p}_{k}": v for p, f1, strict, speed in rows for k, v in (("f1", f1), ("f1_strict", strict),
               ("tokens_per_s", speed))}  # fmt: skip
    harness.log_run("precision", args.tracking_uri, {**info, "model": args.model, "tokens": tokens}, metrics, section)
    if not args.no_docs:
        harness.write_section("precision", section)


if __name__ == "__main__":
    main()
