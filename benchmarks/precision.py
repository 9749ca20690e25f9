"""What `ner.tag precision=bf16` costs in accuracy and gains in speed, next to fp32, with one trained model.

    python pipelines/bench_precision.py [--model best:accuracy] [--tokens 1000000]

Accuracy: `python -m ner.tag input_format=conll` on the CoNLL-2003 test file in each precision; it scores the
predictions against the file's gold column (conlleval-compatible). Speed: `ner.tag` with its defaults on a raw-text
file of detokenised CoNLL-2003 articles, in each precision. `precision=auto` (the default) picks bf16 only where
the CPU has native bfloat16; this shows whether that choice is worth its accuracy. Writes the `precision` section
of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from bench_tag import CONLL_TRAIN, write_input
from docs_section import machine, replace_section

ROOT = Path(__file__).resolve().parents[1]
TEST = ROOT.parent / "shared" / "data" / "conll2003" / "test.txt"
DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- precision:begin -->", "<!-- precision:end -->"


def run_tag(model: str, args: list[str]) -> str:
    cmd = [sys.executable, "-m", "ner.tag", f"model={model}", "progress=false", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return proc.stdout


def test_scores(model: str, precision: str, out: Path) -> dict[str, float]:
    """conlleval F1 and strict F1 of the model on CoNLL-2003 test, from the score table `ner.tag` prints."""
    text = run_tag(model, [f"input={TEST}", "input_format=conll", f"output={out}", f"precision={precision}"])
    header, _, row = [line for line in text.splitlines() if line.startswith("|")][:3]
    values = dict(zip(header.strip("|").split("|"), row.strip("|").split("|"), strict=True))
    return {k.strip(): float(v) for k, v in values.items() if k.strip() in ("f1", "f1_strict")}


def tokens_per_s(model: str, precision: str, text: Path, out: Path) -> float:
    stdout = run_tag(model, [f"input={text}", "one_per_line=true", f"output={out}", f"precision={precision}"])
    return float(re.search(r"\(([\d,]+) tokens/s", stdout).group(1).replace(",", ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="best:accuracy", help="model URI (default: the best run of `accuracy`)")
    ap.add_argument("--tokens", type=int, default=1_000_000, help="raw text size for the speed rows")
    ap.add_argument("--rounds", type=int, default=2, help="speed is the best of this many runs")
    ap.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = ap.parse_args()
    if not TEST.is_file():
        raise SystemExit(f"{TEST} not found: this benchmark needs ../shared/data/conll2003")
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        text = tmp / "news.txt"
        tokens = write_input(text, args.tokens, CONLL_TRAIN)
        for precision in ("fp32", "bf16"):
            scores = test_scores(args.model, precision, tmp / "test.jsonl")
            speed = max(tokens_per_s(args.model, precision, text, tmp / "out.jsonl") for _ in range(args.rounds))
            rows.append((precision, scores["f1"], scores["f1_strict"], speed))
            print(f"{precision}: test F1 {scores['f1']:.2f} (strict {scores['f1_strict']:.2f}), {speed:,.0f} tokens/s")
    info = machine()
    lines = [
        f"Model `{args.model}`; {info['cpu']}, {info['cores']} cores, torch {info['torch']}, {info['date']}; "
        f"native bfloat16 on this CPU: {'yes' if native else 'no'} (so `precision=auto` runs "
        f"{'bf16' if native else 'fp32'}).",
        "",
        "    python pipelines/bench_precision.py " + " ".join(sys.argv[1:]),
        "",
        f"| precision | CoNLL-2003 test F1 | strict | {tokens:,}-token text, `ner.tag` defaults, tokens/s |",
        "|---|---:|---:|---:|",
        *(f"| {p} | {f1:.2f} | {strict:.2f} | {speed:,.0f} |" for p, f1, strict, speed in rows),
        "",
        f"bf16 vs fp32: F1 {rows[1][1] - rows[0][1]:+.2f}, speed {rows[1][3] / rows[0][3]:.2f}x.",
    ]
    print("\n".join(lines))
    if not args.no_docs:
        replace_section(DOCS, BEGIN, END, "## Tagging precision (fp32 vs bf16)\n\n" + "\n".join(lines), "")


if __name__ == "__main__":
    main()
