"""What entity scores cost `ner.tag`: the same input and model tagged with `scores=true` and `scores=false`, in turn.

    python -m benchmarks.scores                                  # 1M tokens, best:ner, 5 rounds of each
    python -m benchmarks.scores --model runs:/<id>/model --tokens 1000000 --rounds 5

Each round runs `ner.tag` (one core: `threads=1 workers=0`) in a child process, on and off alternately, with its
stage timers in CPU seconds of the main thread (`--cpu-time` of benchmarks.tag): with one thread that is the
work itself, a measure that holds while other jobs share the machine, where wall-clock tokens/s swing by 2x.
The medians over the rounds are compared (model load left out). The issue's bound: scores on by default may cost
at most 15% of the tokens/s. Not a test.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from benchmarks import harness


def main() -> None:
    parser = harness.parser("scores", __doc__)
    harness.add_tag_args(parser, tokens=1_000_000)
    parser.add_argument("--rounds", type=int, default=5, help="runs of each setting, alternating (best kept)")
    args = parser.parse_args()
    model = harness.absolute_model(args.model or harness.default_model(args.tracking_uri))
    rounds: dict[bool, list[dict]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="bench-scores-") as tmp:
        source = Path(tmp) / "news.txt"
        tokens = harness.write_input(source, args.tokens, args.source)
        print(f"input: {source.stat().st_size / 2**20:.1f} MiB, {tokens:,} CoNLL tokens, model {model}", flush=True)
        base = {"model": model, "tracking_uri": harness.store_uri(args.tracking_uri), "input": str(source)}
        base.update({"one_per_line": True, "threads": 1, "workers": 0, "output": str(Path(tmp) / "out.jsonl")})
        for round_ in range(args.rounds):
            for scores in (True, False):
                result = harness.run_tag(harness.settings({**base, "scores": scores}), cpu_time=True)
                stages = result["stage_seconds"]
                cpu = sum(v for k, v in stages.items() if k != "load")
                rounds[scores].append({"cpu": cpu, "scores": stages.get("scores", 0.0), "per_s": tokens / cpu})
                print(f"round {round_ + 1} scores={str(scores).lower()}: {tokens / cpu:,.0f} tokens per CPU-second")
    on, off = (_median(rounds[x]) for x in (True, False))
    section = report(on, off, tokens, model, args)
    print("\n" + section)
    harness.write_section("scores", section)
    metrics = {"tokens_per_cpu_s_scores_on": on["per_s"], "tokens_per_cpu_s_scores_off": off["per_s"]}
    metrics["ratio"] = on["per_s"] / off["per_s"]
    params = {"model": model, "tokens": tokens, "rounds": args.rounds}
    harness.log_run("scores", args.tracking_uri, params, metrics, section)


def _median(rows: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def report(on: dict, off: dict, tokens: int, model: str, args) -> str:
    rows = [
        "| setting | tokens per CPU-second (median) | CPU s in tag() | of which entity scores |",
        "|---|---|---|---|",
        f"| `scores=true` (default) | {on['per_s']:,.0f} | {on['cpu']:.1f} | {on['scores']:.1f} |",
        f"| `scores=false` | {off['per_s']:,.0f} | {off['cpu']:.1f} | 0 |",
    ]
    ratio = on["per_s"] / off["per_s"]
    return "\n".join(
        [
            "## Entity scores: what they cost `ner.tag`",
            "",
            f"`{harness.command('scores', drop=('--model', '--tracking-uri'))} --model <URI>` (a model of"
            f" `python -m ner.train`) on {_machine()}, {tokens:,} tokens of CoNLL-2003 news, `threads=1 workers=0`,"
            f" {args.rounds} alternating rounds of each (medians), here the default model {_run_of(model)};"
            f" CPU seconds of the tagging process's one thread, model load left out; load average"
            f" {harness.load_average()}.",
            "",
            *rows,
            "",
            f"With scores on, `ner.tag` tags **{100 * ratio:.1f}%** of the tokens per CPU-second it tags without them"
            f" ({100 * (1 - ratio):.1f}% fewer).",
        ]
    )


def _run_of(model: str) -> str:
    """'run 2d1f818a' for runs:/2d1f818a.../model; anything else as given, without this machine's folders."""
    return f"run {model.split('/')[1][:8]}" if model.startswith("runs:/") else f"`{Path(model).name}`"


def _machine() -> str:
    m = harness.machine()
    return f"{m['cpu']} ({m['cores']} cores), torch {m['torch']}, {m['date']}"


if __name__ == "__main__":
    main()
