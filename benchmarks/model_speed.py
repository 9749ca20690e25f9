"""Do two models tag at the same speed? The same input tagged by `--model` and `--against`, in turn.

    python -m benchmarks.model_speed --model runs:/<new>/model --against runs:/<old>/model --tokens 1000000

For a recipe that changes how a model is trained but not its size (distillation, SWA, train + dev: issue #19),
`ner.tag` should be as fast as before. Each round runs `ner.tag` (one core: `threads=1 workers=0`, the defaults
otherwise) in a child process with each model, in CPU seconds of its one thread (`harness.alternate`), a measure
that holds while other jobs share the machine. The medians are compared, and the two models' sizes (parameters)
printed beside them. Not a test.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks import harness


def main() -> None:
    parser = harness.parser("model_speed", __doc__)
    harness.add_tag_args(parser, tokens=1_000_000)
    parser.add_argument("--against", required=True, help="the model to compare with (e.g. the previous default)")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each model, alternating (medians kept)")
    args = parser.parse_args()
    models = {"model": harness.absolute_model(args.model or harness.default_model(args.tracking_uri))}
    models["against"] = harness.absolute_model(args.against)
    with tempfile.TemporaryDirectory(prefix="bench-model-speed-") as tmp:
        tokens, base = harness.one_core_tagging(Path(tmp), args, models["model"])
        rounds = harness.alternate({k: {**base, "model": m} for k, m in models.items()}, args.rounds, tokens)
    medians = {k: harness.median_row(rows) for k, rows in rounds.items()}
    sizes = {k: parameters(m, args.tracking_uri) for k, m in models.items()}
    section = report(models, medians, sizes, tokens, args)
    print("\n" + section)
    harness.write_section("model-speed", section)
    ratio = medians["model"]["per_s"] / medians["against"]["per_s"]
    metrics = {f"tokens_per_cpu_s_{k}": v["per_s"] for k, v in medians.items()} | {"ratio": ratio}
    params = {"model": models["model"], "against": models["against"], "tokens": tokens, "rounds": args.rounds}
    harness.log_run("model_speed", args.tracking_uri, params, metrics, section)


def parameters(model: str, tracking_uri: str | None) -> int:
    """The number of weights the model's tagger holds, loaded as `ner.tag` loads it."""
    from ner.tracking import model_uri

    return sum(p.numel() for p in model_uri.load(model, harness.store_uri(tracking_uri)).parameters())


def report(models: dict, medians: dict, sizes: dict, tokens: int, args) -> str:
    rows = ["| model | parameters | tokens per CPU-second (median) | CPU s in tag() |", "|---|---:|---:|---:|"]
    for key, name in (("model", "`--model`"), ("against", "`--against`")):
        m = medians[key]
        rows.append(f"| {name} {harness.run_of(models[key])} | {sizes[key]:,} | {m['per_s']:,.0f} | {m['cpu']:.1f} |")
    ratio = medians["model"]["per_s"] / medians["against"]["per_s"]
    return "\n".join(
        [
            "## Same size, same speed: two models in `ner.tag`",
            "",
            f"`{harness.command('model_speed', drop=('--model', '--against', '--tracking-uri'))} --model <URI>"
            f" --against <URI>` on {harness.machine_line()}, {tokens:,} tokens of CoNLL-2003 news,"
            f" `threads=1 workers=0`, {args.rounds} alternating rounds of each (medians); CPU seconds of the"
            f" tagging process's one thread, model load left out; load average {harness.load_average()}.",
            "",
            *rows,
            "",
            f"`--model` tags **{100 * ratio:.1f}%** of the tokens per CPU-second that `--against` tags.",
        ]
    )


if __name__ == "__main__":
    main()
