"""How training and tagging time grow with corpus size and with sentence length (GitHub issue 5, benchmark 4).

    python pipelines/bench_scaling.py                 # 1 torch thread: ~4 minutes
    python pipelines/bench_scaling.py --threads 2 --fractions 0.25,0.5,1,2,4

Corpus size: one training epoch (the real `ner.trainer.train_epoch`: bucketed batches, dropout, CRF, clipping,
SGD step) on 1/4, 1/2, 1 and 2x the CoNLL-2003 training set (2x is the set twice over), from the same initial
weights each time, and tagging the same text as raw articles (`ner.annotate.Annotator.annotate`: tokenise,
features, BiLSTM, Viterbi, records). Both should grow linearly: the ratio column divides each time by the
share of tokens times the 1x time.

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
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_tag import CONLL_TRAIN, conll_articles
from docs_section import machine, replace_section
from hydra import compose, initialize_config_dir

from ner.data import schemes
from ner.data.corpus import tag_strings
from ner.tagging.annotate import Annotator
from ner.tracking import store
from ner.training.pipeline import build
from ner.training.trainer import TrainerConfig, make_optimizer, train_epoch

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- scaling:begin -->", "<!-- scaling:end -->"


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    ap.add_argument("--fractions", default="0.25,0.5,1,2", help="corpus sizes, as multiples of CoNLL-2003 train")
    ap.add_argument("--lengths", default="5,10,20,40,80,160", help="sentence lengths in tokens")
    ap.add_argument("--length-tokens", type=int, default=40_000, help="tokens per sentence-length point")
    ap.add_argument("--tracking-uri", help="MLflow store (default: the project store, ./mlruns/mlflow.db)")
    ap.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides of the model, e.g. model.hidden_size=100")
    return ap.parse_args()


class Setup:
    """The default model, its initial weights, the encoded training set and the raw articles."""

    def __init__(self, overrides: list[str], threads: int):
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose(config_name="train", overrides=[*overrides, f"trainer.threads={threads}"])
        torch.set_num_threads(threads)
        self.trainer = TrainerConfig(**{**cfg.trainer, "progress": False})
        torch.manual_seed(0)
        data_cfg, corpus, _, self.featurizer, self.model = build(cfg)
        self.initial = copy.deepcopy(self.model.state_dict())
        train = corpus["train"]
        self.scheme = data_cfg.train_scheme
        self.tokens, self.iob2 = list(train["tokens"]), tag_strings(train)
        self.tags = [schemes.convert(t, self.scheme) for t in self.iob2]
        self.articles, self.article_tokens = conll_articles(CONLL_TRAIN)

    def epoch_seconds(self, sentences: list[list[str]], tags: list[list[str]]) -> float:
        """Wall time of one training epoch over `sentences`, from the initial weights."""
        self.model.load_state_dict(self.initial)
        enc = self.featurizer.encode(sentences, tags)
        optimizer = make_optimizer(self.model, self.trainer)
        start = time.perf_counter()
        train_epoch(self.model, enc, optimizer, self.trainer, random.Random(0), torch.device("cpu"), 1)
        return time.perf_counter() - start

    def annotator(self) -> Annotator:
        self.model.load_state_dict(self.initial)
        return Annotator(copy.deepcopy(self.model), batch_size=128)


def take(items: list, fraction: float) -> list:
    """The first `fraction` of `items`; beyond 1, the list repeated (2 -> twice over)."""
    whole, part = int(fraction), fraction - int(fraction)
    return items * whole + items[: round(part * len(items))]


def by_corpus_size(setup: Setup, fractions: list[float]) -> list[dict]:
    rows, tagger = [], setup.annotator()
    tagger.annotate(setup.articles[:50])  # warm-up, so the first point pays no first-call costs
    setup.epoch_seconds(setup.tokens[:300], setup.tags[:300])
    for fraction in fractions:
        sentences, tags = take(setup.tokens, fraction), take(setup.tags, fraction)
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
        tags = [schemes.convert(tag_stream[i * length : (i + 1) * length], setup.scheme) for i in range(n)]
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
        f"{info['torch']}; load average {', '.join(f'{x:.2f}' for x in os.getloadavg())} at the end.",
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
    os.chdir(ROOT)  # conf/ paths (data, vectors) are relative to the project root
    if not CONLL_TRAIN.is_file():
        sys.exit(f"{CONLL_TRAIN} not found: this benchmark needs the CoNLL-2003 training set")
    info = machine()
    command = "python pipelines/bench_scaling.py " + " ".join(sys.argv[1:])
    setup = Setup(args.overrides, args.threads)
    size_rows = by_corpus_size(setup, [float(f) for f in args.fractions.split(",")])
    length_rows = by_sentence_length(setup, [int(n) for n in args.lengths.split(",")], args.length_tokens)
    section = report(size_rows, length_rows, info, command.strip(), args.threads)
    print("\n" + section)
    import mlflow

    cfg = store.TrackingConfig(uri=args.tracking_uri, experiment="benchmarks", run_name="scaling", log_model=False)
    with tempfile.TemporaryDirectory() as tmp, store.run(cfg, "scaling", {"benchmark": "scaling"}) as active:
        png = Path(tmp) / "scaling.png"
        plot(size_rows, length_rows, png)
        mlflow.log_params({**info, "threads": args.threads, "overrides": " ".join(args.overrides)})
        mlflow.log_metrics({f"train_s_x{r['fraction']:g}": r["train_s"] for r in size_rows})
        mlflow.log_metrics({f"tag_s_x{r['fraction']:g}": r["tag_s"] for r in size_rows})
        mlflow.log_artifact(str(png))
        mlflow.log_text(section, "scaling.md")
        print(f"logged to MLflow run {active.info.run_id} (experiment benchmarks)")
        if not args.no_docs:
            (DOCS.parent / "scaling.png").write_bytes(png.read_bytes())
            replace_section(DOCS, BEGIN, END, "## Scaling (issue 5, benchmark 4)\n\n" + section, "# Benchmarks\n")
            print(f"wrote the scaling section of {DOCS.relative_to(ROOT)} and docs/scaling.png")


if __name__ == "__main__":
    main()
