"""How training and tagging time grow with corpus size and with sentence length.

    python -m benchmarks.scaling                 # 1 torch thread: ~4 minutes
    python -m benchmarks.scaling --threads 2 --fractions 0.25,0.5,1,2,4

Corpus size: one training epoch (the real `ner.training.trainer.train_epoch`, timed by `harness.time_epoch`:
bucketed batches, dropout, CRF, clipping, SGD step) on 1/4, 1/2, 1 and 2x the CoNLL-2003 training set (2x is the
set twice over), from the same initial weights each time, and tagging the same text as raw articles
(`ner.tagging.annotate.Annotator.annotate`: tokenise, features, BiLSTM, Viterbi, records). Both should grow
linearly: the ratio column divides each time by the share of tokens times the 1x time.

Sentence length: the training token stream cut into sentences of exactly L tokens (same total tokens for every
L), trained with the configured batch size (10 sentences) and tagged pre-tokenised (`Annotator.tag_tokens`), as
microseconds per token: a recurrent tagger's cost per token should not grow with L (it is sequential in L, but
linear), while short sentences pay per-batch overhead. "vs linear" divides each time by (its tokens / the 1x
tokens) x the 1x time: 1.00 is exactly linear.

The model is the default config (conf/) with GloVe; the numbers are speeds, not accuracies. Prints the tables,
draws `scaling.png` (logged with the tables as a run of MLflow experiment `benchmarks`, and copied to docs/) and
writes the `scaling` section of docs/benchmarks.md. Not a test: its numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import harness
from ner.data.corpus import tag_strings
from ner.tagging.annotate import Annotator


def parse() -> argparse.Namespace:
    ap = harness.parser("scaling", __doc__)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    ap.add_argument("--fractions", default="0.25,0.5,1,2", help="corpus sizes, as multiples of CoNLL-2003 train")
    ap.add_argument("--lengths", default="5,10,20,40,80,160", help="sentence lengths in tokens")
    ap.add_argument("--length-tokens", type=int, default=40_000, help="tokens per sentence-length point")
    ap.add_argument("--tracking-uri", help="MLflow store (default: the project store, mlruns/mlflow.db)")
    ap.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides of the model, e.g. model.hidden_size=100")
    return ap.parse_args()


class Setup:
    """The default model and its initial weights (`harness.training_sample`), the training set, the raw articles."""

    def __init__(self, overrides: list[str], threads: int):
        self.sample = harness.training_sample(overrides, harness.WARMUP_SENTENCES, threads)
        train = self.sample.corpus["train"]
        self.tokens, self.iob2 = list(train["tokens"]), tag_strings(train)
        self.articles, self.article_tokens = harness.conll_articles()

    def epoch_seconds(self, sentences: list[list[str]], iob2: list[list[str]]) -> float:
        """Wall time of one training epoch (`train_epoch`) over `sentences`, from the initial weights."""
        return harness.time_epoch(self.sample, self.sample.encode(sentences, iob2), warmup=False).seconds

    def annotator(self) -> Annotator:
        self.sample.model.load_state_dict(self.sample.initial)
        return Annotator(copy.deepcopy(self.sample.model), batch_size=128)


def take(items: list, fraction: float) -> list:
    """The first `fraction` of `items`; beyond 1, the list repeated (2 -> twice over)."""
    whole, part = int(fraction), fraction - int(fraction)
    return items * whole + items[: round(part * len(items))]


def by_corpus_size(setup: Setup, fractions: list[float]) -> list[dict]:
    rows, tagger = [], setup.annotator()
    tagger.annotate(setup.articles[:50])  # warm-up, so the first point pays no first-call costs
    setup.epoch_seconds(setup.tokens[: harness.WARMUP_SENTENCES], setup.iob2[: harness.WARMUP_SENTENCES])
    for fraction in fractions:
        sentences, tags = take(setup.tokens, fraction), take(setup.iob2, fraction)
        train_s = setup.epoch_seconds(sentences, tags)
        articles = take(setup.articles, fraction)
        tag_tokens = sum(take(setup.article_tokens, fraction))
        start = time.perf_counter()
        for i in range(0, len(articles), 500):
            tagger.annotate(articles[i : i + 500])
        tag_s = time.perf_counter() - start
        tokens = sum(map(len, sentences))
        rows.append({"fraction": fraction, "sentences": len(sentences), "tokens": tokens, "train_s": train_s,
                     "tag_tokens": tag_tokens, "tag_s": tag_s})  # fmt: skip
        print(f"x{fraction:g}: {len(sentences):,} sentences, epoch {train_s:.1f} s, tagging {tag_s:.1f} s", flush=True)
    unit = next((r for r in rows if r["fraction"] == 1), rows[-1])
    for r in rows:
        # divided by what was taken, not what was asked: a prefix is not exactly that share of the tokens
        r["train_ratio"] = r["train_s"] / (r["tokens"] / unit["tokens"] * unit["train_s"])
        r["tag_ratio"] = r["tag_s"] / (r["tag_tokens"] / unit["tag_tokens"] * unit["tag_s"])
    return rows


def by_sentence_length(setup: Setup, lengths: list[int], total: int) -> list[dict]:
    stream = [w for s in setup.tokens for w in s]
    tag_stream = [t for s in setup.iob2 for t in s]
    rows, tagger = [], setup.annotator()
    tagger.tag_tokens([stream[:20]] * 50)  # warm-up
    for length in lengths:
        n = max(1, min(total, len(stream)) // length)
        sentences = [stream[i * length : (i + 1) * length] for i in range(n)]
        tags = [tag_stream[i * length : (i + 1) * length] for i in range(n)]
        train_s = setup.epoch_seconds(sentences, tags)
        start = time.perf_counter()
        tagger.tag_tokens(sentences)
        tag_s = time.perf_counter() - start
        tokens = sum(map(len, sentences))
        rows.append({"length": length, "sentences": n, "tokens": tokens, "train_us": 1e6 * train_s / tokens,
                     "tag_us": 1e6 * tag_s / tokens})  # fmt: skip
        print(f"L={length}: {rows[-1]['train_us']:.0f} us/token training, {rows[-1]['tag_us']:.1f} tagging", flush=True)
    return rows


def plot(size_rows: list[dict], length_rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    x = [r["fraction"] for r in size_rows]
    unit = next((r for r in size_rows if r["fraction"] == 1), size_rows[-1])
    for key, size, label in (("train_s", "tokens", "training epoch"), ("tag_s", "tag_tokens", "tagging the text")):
        left.plot(x, [r[key] for r in size_rows], "o-", label=label)
        left.plot(x, [r[size] / unit[size] * unit[key] for r in size_rows], ":", color="grey")
    left.set(xlabel="corpus size (x CoNLL-2003 train)", ylabel="seconds", title="time vs corpus size (dots: linear)")
    left.legend()
    lengths = [r["length"] for r in length_rows]
    right.plot(lengths, [r["train_us"] for r in length_rows], "o-", label="training")
    right.plot(lengths, [r["tag_us"] for r in length_rows], "o-", label="tagging")
    right.set(xscale="log", yscale="log", xlabel="sentence length (tokens)", ylabel="microseconds per token",
              title="cost per token vs sentence length")  # fmt: skip
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(size_rows: list[dict], length_rows: list[dict], info: dict, command: str, threads: int) -> str:
    lines = [
        f"Measured {info['date']} on {info['cpu']} ({info['cores']} cores, {threads} torch thread(s)), torch "
        f"{info['torch']}; load average {harness.load_average()} at the end.",
        "",
        f"    {command}",
        "",
        "| corpus | sentences | tokens | training epoch s | vs linear | tagging s | vs linear |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in size_rows:
        lines.append(f"| {r['fraction']:g}x | {r['sentences']:,} | {r['tokens']:,} | {r['train_s']:.1f} | "
                     f"{r['train_ratio']:.2f} | {r['tag_s']:.1f} | {r['tag_ratio']:.2f} |")  # fmt: skip
    lines += ["", "| sentence length | sentences | training us/token | tagging us/token |", "|---:|---:|---:|---:|"]
    for r in length_rows:
        lines.append(f"| {r['length']} | {r['sentences']:,} | {r['train_us']:.0f} | {r['tag_us']:.1f} |")
    lines += ["", "![time vs corpus size and sentence length](scaling.png)"]
    return "\n".join(lines)


def main() -> None:
    args = parse()
    if not harness.CONLL_TRAIN.is_file():
        sys.exit(f"{harness.CONLL_TRAIN} not found: this benchmark needs the CoNLL-2003 training set")
    info = harness.machine()
    setup = Setup(args.overrides, args.threads)
    size_rows = by_corpus_size(setup, [float(f) for f in args.fractions.split(",")])
    length_rows = by_sentence_length(setup, [int(n) for n in args.lengths.split(",")], args.length_tokens)
    section = "## Scaling\n\n" + report(size_rows, length_rows, info, harness.command("scaling"), args.threads)
    print("\n" + section)
    metrics = {f"train_s_x{r['fraction']:g}": r["train_s"] for r in size_rows}
    metrics.update({f"tag_s_x{r['fraction']:g}": r["tag_s"] for r in size_rows})
    params = {**info, "threads": args.threads, "overrides": " ".join(args.overrides)}
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "scaling.png"
        plot(size_rows, length_rows, png)
        harness.log_run("scaling", args.tracking_uri, params, metrics, section, [png])
        if not args.no_docs:
            (harness.DOCS.parent / "scaling.png").write_bytes(png.read_bytes())
            harness.write_section("scaling", section)


if __name__ == "__main__":
    main()
