"""Measure the peak memory of tagging one whole document, by size: the cost per input byte behind `max_document_mb`.

    python -m benchmarks.document_memory                       # best:ner (or the newest run with a model), 1-16 MiB
    python -m benchmarks.document_memory --model <folder|URI> --mib 2 8 32 --budget-gib 2

Each size is one document (a whole file, `one_per_line=false`: the case `max_document_mb` bounds) of detokenised
CoNLL-2003 news, tagged by `ner.tagging.pipeline.tag` in a child process (`workers=0 threads=1`, so the whole
document lives in that one process) whose peak RSS (`getrusage`) is read back. A least-squares line through the
points gives the fixed cost (interpreter, torch, model) and the cost per input byte; the largest document that
fits `--budget-gib` follows from them. Not a test: a minute or more, and the figures depend on the machine.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from benchmarks import harness


def main() -> None:
    parser = harness.parser("document_memory", __doc__)
    parser.add_argument("--model", help="model URI or folder (default: best:ner, else the newest run with a model)")
    parser.add_argument("--tracking-uri", help="MLflow store (default: the project store, mlruns/mlflow.db)")
    parser.add_argument("--mib", type=float, nargs="+", default=[1, 4, 16], help="document sizes in MiB")
    parser.add_argument("--budget-gib", type=float, default=2.0, help="memory a laptop can give one tagging run")
    parser.add_argument("--source", type=Path, default=harness.CONLL_TRAIN, help="CoNLL file to detokenise")
    args = parser.parse_args()
    model = harness.absolute_model(args.model or harness.default_model(args.tracking_uri))
    print(f"model {model}; {harness.load_average()}", flush=True)
    points = []
    with tempfile.TemporaryDirectory(prefix="bench-docmem-") as tmp:
        for mib in args.mib:
            doc = Path(tmp) / f"doc-{mib:g}.txt"
            harness.write_input(doc, 0, args.source, size=mib * 2**20)
            size = doc.stat().st_size
            result = harness.run_tag(
                harness.settings(
                    {
                        "model": model,
                        "tracking_uri": harness.store_uri(args.tracking_uri),
                        "input": str(doc),
                        "output": str(Path(tmp) / f"out-{mib:g}.jsonl"),
                        "one_per_line": False,
                        "max_document_mb": 4 * mib + 1,
                        "workers": 0,
                        "threads": 1,
                        "progress": False,
                    }
                )
            )
            peak = result["peak_rss_mib"] * 2**20
            points.append((size, peak))
            print(f"  {size / 2**20:7.1f} MiB document ({result['tokens']:,} tokens): peak RSS {peak / 2**20:,.0f} MiB")
            doc.unlink()
    slope, intercept = fit(points)
    cap = (args.budget_gib * 2**30 - intercept) / slope / 2**20
    print(
        f"fixed cost {intercept / 2**20:,.0f} MiB, then {slope:,.0f} bytes of memory per input byte; "
        f"max_document_mb={cap:,.0f} keeps one document within {args.budget_gib:g} GiB; {harness.load_average()}"
    )


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(slope, intercept) of the least-squares line through `points`."""
    if len(points) < 2:
        sys.exit("give at least two --mib sizes")
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    return slope, my - slope * mx


if __name__ == "__main__":
    main()
