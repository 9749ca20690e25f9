"""What entity scores cost `ner.tag`: the same input and model tagged with `scores=true` and `scores=false`, in turn.

    python -m benchmarks.scores                                  # 1M tokens, best:ner, 3 rounds of each
    python -m benchmarks.scores --model runs:/<id>/model --tokens 1000000 --rounds 5

Each round runs `ner.tag` (one core: `threads=1 workers=0`, so a busy second core slows both settings alike) in a
child process, on and off alternately; the best round of each is kept (tokens/s inside tag(), model load left out),
and so is the CPU time per token (the main thread's CPU seconds: a measure that holds while other jobs share the
machine). The ratio is what the issue asks for: scores on by default may cost at most 15%. Not a test.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks import harness


def main() -> None:
    parser = harness.parser("scores", __doc__)
    harness.add_tag_args(parser, tokens=1_000_000)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each setting, alternating (best kept)")
    args = parser.parse_args()
    model = harness.absolute_model(args.model or harness.default_model(args.tracking_uri))
    best: dict[bool, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-scores-") as tmp:
        source = Path(tmp) / "news.txt"
        tokens = harness.write_input(source, args.tokens, args.source)
        print(f"input: {source.stat().st_size / 2**20:.1f} MiB, {tokens:,} CoNLL tokens, model {model}", flush=True)
        base = {"model": model, "tracking_uri": harness.store_uri(args.tracking_uri), "input": str(source)}
        base.update({"one_per_line": True, "threads": 1, "workers": 0, "output": str(Path(tmp) / "out.jsonl")})
        for round_ in range(args.rounds):
            for scores in (True, False):
                result = harness.run_tag(harness.settings({**base, "scores": scores}), cpu_time=False)
                per_s = harness.rate(result, without_load=True)
                cpu = result["process_cpu_seconds"]
                print(f"round {round_ + 1} scores={str(scores).lower()}: {per_s:,.0f} tokens/s, {cpu:.1f} CPU s")
                if scores not in best or per_s > best[scores]["per_s"]:
                    best[scores] = {"per_s": per_s, "cpu": cpu, "result": result}
    on, off = best[True], best[False]
    section = report(on, off, tokens, model, args)
    print("\n" + section)
    harness.write_section("scores", section)
    metrics = {"tokens_per_s_scores_on": on["per_s"], "tokens_per_s_scores_off": off["per_s"]}
    metrics["ratio"] = on["per_s"] / off["per_s"]
    harness.log_run(
        "scores", args.tracking_uri, {"model": model, "tokens": tokens, "rounds": args.rounds}, metrics, section
    )


def report(on: dict, off: dict, tokens: int, model: str, args) -> str:
    scores_s = on["result"]["stage_seconds"].get("scores", 0.0)
    rows = [
        "| setting | tokens/s (best round, load excluded) | main-thread CPU s | scoring stage s |",
        "|---|---|---|---|",
        f"| `scores=true` (default) | {on['per_s']:,.0f} | {on['cpu']:.1f} | {scores_s:.1f} |",
        f"| `scores=false` | {off['per_s']:,.0f} | {off['cpu']:.1f} | 0 |",
    ]
    ratio = on["per_s"] / off["per_s"]
    return "\n".join(
        [
            "## Entity scores: what they cost `ner.tag`",
            "",
            f"`{harness.command('scores')}` on {_machine()}, {tokens:,} tokens of CoNLL-2003 news,"
            f" `threads=1 workers=0`, {args.rounds} alternating rounds of each, model `{model}`; load average"
            f" {harness.load_average()}.",
            "",
            *rows,
            "",
            f"With scores on, `ner.tag` runs at **{100 * ratio:.1f}%** of its speed without them"
            f" ({100 * (1 - ratio):.1f}% slower).",
        ]
    )


def _machine() -> str:
    m = harness.machine()
    return f"{m['cpu']} ({m['cores']} cores), torch {m['torch']}, {m['date']}"


if __name__ == "__main__":
    main()
