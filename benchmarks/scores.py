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

import tempfile
from pathlib import Path

from benchmarks import harness


def main() -> None:
    parser = harness.parser("scores", __doc__)
    harness.add_tag_args(parser, tokens=1_000_000)
    parser.add_argument("--rounds", type=int, default=5, help="runs of each setting, alternating (medians kept)")
    args = parser.parse_args()
    model = harness.absolute_model(args.model or harness.default_model(args.tracking_uri))
    with tempfile.TemporaryDirectory(prefix="bench-scores-") as tmp:
        tokens, base = harness.one_core_tagging(Path(tmp), args, model)
        variants = {f"scores={str(x).lower()}": {**base, "scores": x} for x in (True, False)}
        rounds = harness.alternate(variants, args.rounds, tokens)
    on, off = (harness.median_row(rounds[f"scores={x}"]) for x in ("true", "false"))
    section = report(on, off, tokens, model, args)
    print("\n" + section)
    harness.write_section("scores", section)
    metrics = {"tokens_per_cpu_s_scores_on": on["per_s"], "tokens_per_cpu_s_scores_off": off["per_s"]}
    metrics["ratio"] = on["per_s"] / off["per_s"]
    params = {"model": model, "tokens": tokens, "rounds": args.rounds}
    harness.log_run("scores", args.tracking_uri, params, metrics, section)


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
            f" `python -m ner.train`) on {harness.machine_line()}, {tokens:,} tokens of CoNLL-2003 news,"
            f" `threads=1 workers=0`, {args.rounds} alternating rounds of each (medians), here the default model"
            f" {harness.run_of(model)};"
            f" CPU seconds of the tagging process's one thread, model load left out; load average"
            f" {harness.load_average()}.",
            "",
            *rows,
            "",
            f"With scores on, `ner.tag` tags **{100 * ratio:.1f}%** of the tokens per CPU-second it tags without them"
            f" ({100 * (1 - ratio):.1f}% fewer).",
        ]
    )


if __name__ == "__main__":
    main()
