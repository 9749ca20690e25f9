"""Flair's `SequenceTagger` trained the way a Flair user trains it, for a fixed wall-clock budget: the accuracy peer.

    .venv-flair/bin/python benchmarks/flair_accuracy.py --minutes 30 --threads 1 --seed 1 --out flair.json

Why: `docs/benchmarks.md` compares our BiLSTM-CRF with the peer users would pick. This trains that peer with
Flair's own recipe and nothing of ours: `ModelTrainer(tagger, corpus).train(...)` with its defaults for a
BiLSTM-CRF on CoNLL (plain SGD, learning rate 0.1, mini-batches of 32, halving the rate after 3 epochs without a
better dev F1, gradient clipping at 5, stop when the rate falls under 1e-4), keeping the best-on-dev model
(best-model.pt), which is the model Flair itself tests. Same inputs as ours: the local CoNLL-2003 folder (IOB1 in
the files; Flair's column reader makes the same spans the standard IOB1 -> IOB2 conversion gives, and the tagger
learns them in BIOES), GloVe 6B 50d, and the model `flair_peer.build_tagger` builds (our size: BiLSTM 200 per
direction, CRF, character BiLSTM 30 + 30; Flair's defaults kept: GloVe frozen, word dropout 0.05, locked dropout
0.5). Same budget rule as `trainer.max_minutes`: after each epoch (dev evaluated, best model saved), training stops
if one more epoch of the mean length so far would overrun `--minutes`: a `TrainerPlugin` raises Flair's
`TrainingInterrupt` (what Flair's own AnnealingPlugin raises to stop) in its `before_training_epoch` hook.

Scored the way we score: test and dev with `seqeval.metrics` in its default (conlleval) mode on IOB2 sequences,
gold from the files (IOB1 -> IOB2), prediction from Flair's spans, `-DOCSTART-` lines left out (ours drops them;
Flair trains and evaluates on them as the one-token sentences its reader makes). Flair's own test micro F1 is
reported beside it. The result is JSON on the last line of stdout (and in `--out`); Flair's training folder is a
temporary one, deleted at the end. `--max-train N` trains on the first N training sentences (a smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no Hub access, even by accident
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import flair  # noqa: E402 (after the offline switches)
import flair_peer  # noqa: E402 (benchmarks/flair_peer.py: this script's folder is first on sys.path)
import torch  # noqa: E402
from flair.data import Corpus, Sentence  # noqa: E402
from flair.models import SequenceTagger  # noqa: E402
from flair.trainers import ModelTrainer  # noqa: E402
from flair.trainers.plugins import TrainerPlugin, TrainingInterrupt  # noqa: E402
from seqeval.metrics import f1_score, precision_score, recall_score  # noqa: E402
from torch.utils.data import Subset  # noqa: E402

DOCSTART = "-DOCSTART-"


def parse() -> argparse.Namespace:
    """Command line; the model sizes default to those of our default model (as in flair_peer.py)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="wall-clock budget for training")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data", type=Path, default=flair_peer.DATA / "conll2003", help="CoNLL-2003 folder")
    ap.add_argument("--vectors", type=Path, default=flair_peer.DATA / "vectors" / "glove.6B.50d.txt")
    ap.add_argument("--max-train", type=int, default=0, help="train on the first N sentences only (0 = all)")
    ap.add_argument("--max-epochs", type=int, default=150, help="Flair's cap; the budget or annealing ends first")
    ap.add_argument("--out", type=Path, help="also write the JSON result here")
    ap.add_argument("--hidden-size", type=int, default=200)
    ap.add_argument("--char-dim", type=int, default=30)
    ap.add_argument("--char-hidden", type=int, default=30)
    return ap.parse_args()


class TimeBudget(TrainerPlugin):
    """Stops ModelTrainer before an epoch that would, at the mean epoch time so far, end past the budget; records
    the epochs, the best one and the dev F1 Flair selects on."""

    def __init__(self, minutes: float) -> None:
        super().__init__()
        self.seconds = 60 * minutes
        self.started = self.stopped = time.perf_counter()
        self.epochs = self.best_epoch = 0
        self.dev_scores: list[float] = []
        self.out_of_time = False

    @TrainerPlugin.hook
    def after_setup(self, **kw: object) -> None:
        self.started = self.stopped = time.perf_counter()

    @TrainerPlugin.hook
    def before_training_epoch(self, epoch: int, **kw: object) -> None:
        elapsed = time.perf_counter() - self.started
        if self.epochs and elapsed + elapsed / self.epochs > self.seconds:
            self.out_of_time = True
            raise TrainingInterrupt(f"time budget: {elapsed / 60:.1f} of {self.seconds / 60:g} minutes used")

    @TrainerPlugin.hook
    def after_evaluation(self, epoch: int, current_model_is_best: bool, validation_scores: tuple, **kw: object) -> None:
        # runs before AnnealingPlugin's hook (attached first), which stops training when the rate gets too small
        self.epochs, self.stopped = epoch, time.perf_counter()
        self.dev_scores.append(float(validation_scores[0]))
        if current_model_is_best:
            self.best_epoch = epoch


def read_gold(path: Path) -> list[tuple[list[str], list[str]]]:
    """(tokens, IOB2 tags) of every sentence of a CoNLL file but the `-DOCSTART-` ones."""
    sentences, tokens, tags = [], [], []
    for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        if line.strip():
            fields = line.split()
            tokens.append(fields[0])
            tags.append(fields[-1])
        elif tokens:
            if tokens != [DOCSTART]:
                sentences.append((tokens, iob1_to_iob2(tags)))
            tokens, tags = [], []
    return sentences


def iob1_to_iob2(tags: list[str]) -> list[str]:
    """The standard conversion: an I-X that does not continue an entity of type X (after O, or after another type)
    begins one, B-X."""
    out, prev = [], "O"
    for tag in tags:
        if tag.startswith("I-") and (prev == "O" or prev[2:] != tag[2:]):
            tag = "B-" + tag[2:]
        out.append(tag)
        prev = tag
    return out


def predicted_iob2(sentence: Sentence, label: str) -> list[str]:
    """Flair's predicted spans as IOB2 tags."""
    tags = ["O"] * len(sentence)
    for span in sentence.get_spans(label):
        first, last = span[0].idx - 1, span[-1].idx - 1
        typ = span.get_label(label).value
        tags[first : last + 1] = [f"B-{typ}"] + [f"I-{typ}"] * (last - first)
    return tags


def seqeval_scores(tagger: SequenceTagger, split: list[Sentence], gold_file: Path) -> dict[str, float]:
    """Precision, recall, F1 (x100, 2 decimals) of seqeval's default mode on a split, gold from its file."""
    sentences = [s for s in split if not (len(s) == 1 and s[0].text == DOCSTART)]
    gold = read_gold(gold_file)
    if [[t.text for t in s] for s in sentences] != [tokens for tokens, _ in gold]:
        raise SystemExit(f"flair_accuracy: Flair's sentences of {gold_file} differ from the file's")
    tagger.predict(sentences, mini_batch_size=64, label_name="predicted")  # eval_batch_size, Flair's default
    pred = [predicted_iob2(s, "predicted") for s in sentences]
    true = [tags for _, tags in gold]
    return {
        "precision": round(100 * precision_score(true, pred), 2),
        "recall": round(100 * recall_score(true, pred), 2),
        "f1": round(100 * f1_score(true, pred), 2),
    }


def train_and_score(args: argparse.Namespace, folder: Path) -> dict:
    """Build, train for the budget, load the best-on-dev model (ModelTrainer does), score dev and test."""
    corpus, train = flair_peer.load_corpus(args.data)
    if args.max_train:
        corpus = Corpus(Subset(corpus.train, range(args.max_train)), corpus.dev, corpus.test, name="conll2003")
        train = [s for s in corpus.train if not (len(s) == 1 and s[0].text == DOCSTART)]
    tagger = flair_peer.build_tagger(corpus, train, flair_peer.keyed_vectors(args.vectors, folder), args)
    budget = TimeBudget(args.minutes)
    result = ModelTrainer(tagger, corpus).train(
        folder / "flair-model",
        learning_rate=0.1,
        mini_batch_size=32,
        anneal_factor=0.5,
        patience=3,
        max_epochs=args.max_epochs,
        optimizer=torch.optim.SGD,
        plugins=[budget],
    )
    return {
        "flair": flair.__version__,
        "torch": torch.__version__,
        "seqeval": version("seqeval"),
        "threads": torch.get_num_threads(),
        "seed": args.seed,
        "minutes_budget": args.minutes,
        "train_sentences": len(corpus.train),
        "params": sum(p.numel() for p in tagger.parameters() if p.requires_grad),
        "epochs": budget.epochs,
        "best_epoch": budget.best_epoch,
        "stop_reason": "time budget"
        if budget.out_of_time
        else "max_epochs"
        if budget.epochs == args.max_epochs
        else "learning rate too small",  # AnnealingPlugin's stop
        "train_minutes": round((budget.stopped - budget.started) / 60, 2),
        "flair_dev_f1_history": [round(100 * f, 2) for f in budget.dev_scores],
        "flair_test_f1": round(100 * result["test_score"], 2),  # Flair's own micro F1 on the same model
        "dev": seqeval_scores(tagger, list(corpus.dev), args.data / "valid.txt"),
        "test": seqeval_scores(tagger, list(corpus.test), args.data / "test.txt"),
    }


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    flair.set_seed(args.seed)
    with tempfile.TemporaryDirectory(prefix="flair-accuracy-") as tmp:
        result = train_and_score(args, Path(tmp))
    result["test_f1"], result["dev_f1"] = result["test"]["f1"], result["dev"]["f1"]
    line = json.dumps(result)
    if args.out:
        args.out.write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
