"""Flair's `SequenceTagger` timed on the work that `python -m benchmarks.speed` times our tagger on: the peer side.

    .venv-flair/bin/python benchmarks/flair_peer.py --batches batches.json --tag-input news.txt --tag-output out.jsonl

Runs inside `.venv-flair` (made by `benchmarks/flair_env.sh`), as a child process of the benchmark, and prints its
results as JSON on the last line of stdout. Nothing is downloaded: the corpus is read from the local CoNLL-2003
folder, GloVe is converted from the local text file into a gensim KeyedVectors file in a temporary folder (the form
Flair's own GloVe download takes), and the character dictionary is built from the training data, because
`CharacterEmbeddings()` without one would fetch Flair's "common-chars" list from the network.

The model is the size of ours: BiLSTM 200 per direction, CRF, GloVe 50d, a character BiLSTM of 30 + 30 (Flair's
only character encoder; ours defaults to a CNN and offers the same LSTM), no re-projection layer (ours has none).
Flair's own defaults are kept where they change nothing of the cost model: GloVe frozen (`fine_tune=False`),
locked dropout 0.5 and word dropout 0.05.

What is timed, and only that:
- training: `forward_loss` + backward + gradient clipping + SGD step + `store_embeddings` per mini-batch, which is
  the inner loop of Flair's `ModelTrainer` (storage mode "cpu", its `train()` default), over the batches the
  benchmark passes in (the same sentence indices our tagger trains on), after a short warm-up; and again over
  the shuffled fixed-size batches `ModelTrainer` itself would make, since Flair does not bucket by length.
- tagging: file -> JSONL end to end (read lines, split and tokenise with Flair's `SegtokSentenceSplitter`,
  `predict`, write one record per line with tokens, offsets, IOB2 tags and entities), model already in memory.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no Hub access, even by accident
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import flair  # noqa: E402 (after the offline switches)
import torch  # noqa: E402
from flair.data import Corpus, Dictionary, Sentence  # noqa: E402
from flair.datasets import ColumnCorpus  # noqa: E402
from flair.embeddings import CharacterEmbeddings, StackedEmbeddings, WordEmbeddings  # noqa: E402
from flair.models import SequenceTagger  # noqa: E402
from flair.splitter import SegtokSentenceSplitter  # noqa: E402
from flair.training_utils import store_embeddings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def parse() -> argparse.Namespace:
    """Command line; the defaults are the sizes of our default model."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA / "conll2003", help="CoNLL-2003 folder (train/valid/test.txt)")
    ap.add_argument("--vectors", type=Path, default=DATA / "vectors" / "glove.6B.50d.txt", help="GloVe text file")
    ap.add_argument("--batches", type=Path, required=True, help='JSON {"lengths": [...], "batches": [[i, ...]]}')
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hidden-size", type=int, default=200)
    ap.add_argument("--char-dim", type=int, default=30)
    ap.add_argument("--char-hidden", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=10, help="for the shuffled (ModelTrainer-style) batches")
    ap.add_argument("--warmup", type=int, default=20, help="untimed mini-batches before each timed pass")
    ap.add_argument("--lr", type=float, default=0.015)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--clip", type=float, default=5.0)
    ap.add_argument("--tag-input", type=Path, help="text file, one document per line (skip tagging if absent)")
    ap.add_argument("--tag-output", type=Path, help="JSONL written by the tagging pass")
    ap.add_argument("--tag-batch-size", type=int, default=32, help="mini_batch_size for predict (Flair's default)")
    ap.add_argument("--chunk-chars", type=int, default=1_000_000, help="documents tagged per predict call")
    return ap.parse_args()


def load_corpus(folder: Path) -> tuple[Corpus, list[Sentence]]:
    """The corpus, and its training sentences in file order without the `-DOCSTART-` lines (ours drops them too)."""
    corpus = ColumnCorpus(
        folder,
        {0: "text", 3: "ner"},
        train_file="train.txt",
        dev_file="valid.txt",
        test_file="test.txt",
        document_separator_token="-DOCSTART-",
    )
    train = [s for s in corpus.train if not (len(s) == 1 and s[0].text == "-DOCSTART-")]
    return corpus, train


def keyed_vectors(glove: Path, folder: Path) -> Path:
    """GloVe text -> gensim KeyedVectors file in `folder` (what `WordEmbeddings(path)` loads without network)."""
    from gensim.models import KeyedVectors

    vectors = KeyedVectors.load_word2vec_format(str(glove), binary=False, no_header=True)
    path = folder / "glove.gensim"
    vectors.save(str(path))
    return path


def char_dictionary(sentences: list[Sentence]) -> Dictionary:
    """Every character of the training tokens (plus <unk>): the same character set our featurizer builds."""
    chars = Dictionary(add_unk=True)
    for sentence in sentences:
        for token in sentence:
            for char in token.text:
                chars.add_item(char)
    return chars


def build_tagger(corpus: Corpus, train: list[Sentence], vectors: Path, args: argparse.Namespace) -> SequenceTagger:
    """BiLSTM-CRF over GloVe + char BiLSTM, sized like ours (see the module docstring)."""
    chars = CharacterEmbeddings(
        char_dictionary(train), char_embedding_dim=args.char_dim, hidden_size_char=args.char_hidden
    )
    embeddings = StackedEmbeddings([WordEmbeddings(str(vectors)), chars])
    return SequenceTagger(
        hidden_size=args.hidden_size,
        embeddings=embeddings,
        tag_dictionary=corpus.make_label_dictionary("ner", add_unk=False),
        tag_type="ner",
        use_crf=True,
        reproject_embeddings=False,
    )


def train_pass(
    tagger: SequenceTagger, sentences: list[Sentence], batches: list[list[int]], args: argparse.Namespace
) -> dict:
    """Tokens/s of ModelTrainer's inner loop over `batches` (after `args.warmup` untimed ones), by the wall clock and
    per CPU-second of the process (all its threads: the cost, which other jobs on the cores change less)."""
    optimizer = torch.optim.SGD(tagger.parameters(), lr=args.lr, momentum=args.momentum)
    tagger.train()
    for index in batches[: args.warmup]:
        _step(tagger, optimizer, [sentences[i] for i in index], args.clip)
    tokens, start, cpu = 0, time.perf_counter(), time.process_time()
    for index in batches:
        batch = [sentences[i] for i in index]
        _step(tagger, optimizer, batch, args.clip)
        tokens += sum(len(s) for s in batch)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {
        "tokens": tokens,
        "sentences": sum(map(len, batches)),
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "cpu_seconds": cpu,
        "tokens_per_cpu_s": tokens / cpu,
    }


def _step(tagger: SequenceTagger, optimizer: torch.optim.Optimizer, batch: list[Sentence], clip: float) -> float:
    tagger.zero_grad()
    optimizer.zero_grad()
    loss, _ = tagger.forward_loss(batch)
    value = loss.item()
    loss.backward()
    store_embeddings(batch, "cpu")  # ModelTrainer.train's default: keep static vectors, drop the char ones
    torch.nn.utils.clip_grad_norm_(tagger.parameters(), clip)
    optimizer.step()
    return value


def shuffled_batches(count: int, batch_size: int, seed: int = 0) -> list[list[int]]:
    """Fixed-size batches of a shuffled order: what ModelTrainer's DataLoader gives (no length bucketing)."""
    order = list(range(count))
    random.Random(seed).shuffle(order)
    return [order[i : i + batch_size] for i in range(0, count, batch_size)]


def tag_file(tagger: SequenceTagger, source: Path, output: Path, batch_size: int, chunk_chars: int) -> dict:
    """File -> JSONL end to end; returns counts and seconds (the model is already loaded)."""
    splitter = SegtokSentenceSplitter()
    tagger.eval()
    counts = dict.fromkeys(("documents", "sentences", "tokens", "entities"), 0)
    start = time.perf_counter()
    with open(output, "w", encoding="utf-8") as out:
        for first, texts in _chunks(source, chunk_chars):
            docs = [[s for s in splitter.split(text) if len(s)] for text in texts]
            tagger.predict([s for sents in docs for s in sents], mini_batch_size=batch_size)
            for offset, (text, sents) in enumerate(zip(texts, docs, strict=True)):
                record = _record(str(source), first + offset, text, sents)
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                counts["documents"] += 1
                counts["sentences"] += len(sents)
                counts["tokens"] += sum(len(s) for s in sents)
                counts["entities"] += len(record["entities"])
    seconds = time.perf_counter() - start
    return {**counts, "seconds": seconds, "tokens_per_s": counts["tokens"] / seconds, "mini_batch_size": batch_size}


def _chunks(source: Path, chunk_chars: int) -> Iterator[tuple[int, list[str]]]:
    """(index of the first document, documents) of about `chunk_chars` characters, one document per line."""
    texts, size, first = [], 0, 0
    with open(source, encoding="utf-8") as f:
        for line in f:
            texts.append(line.rstrip("\n"))
            size += len(line)
            if size >= chunk_chars:
                yield first, texts
                first, texts, size = first + len(texts), [], 0
    if texts:
        yield first, texts


def _record(source: str, doc: int, text: str, sentences: list[Sentence]) -> dict:
    """The record `ner.tag` writes (source, doc, text, sentences with offsets and IOB2 tags, entities)."""
    out_sentences, entities = [], []
    for sent in sentences:
        base = sent.start_position
        tags = ["O"] * len(sent)
        for span in sent.get_spans("ner"):
            label = span.get_label("ner").value
            first, last = span[0].idx - 1, span[-1].idx - 1
            tags[first : last + 1] = [f"B-{label}"] + [f"I-{label}"] * (last - first)
            start, end = base + span.start_position, base + span.end_position
            entities.append({"text": text[start:end], "type": label, "start": start, "end": end})
        out_sentences.append(
            {
                "start": base + sent[0].start_position,
                "end": base + sent[-1].end_position,
                "tokens": [t.text for t in sent],
                "offsets": [[base + t.start_position, base + t.end_position] for t in sent],
                "tags": tags,
            }
        )
    return {"source": source, "doc": doc, "text": text, "sentences": out_sentences, "entities": entities}


def check_same_sentences(train: list[Sentence], lengths: list[int]) -> None:
    """Stop unless the first training sentences have the lengths the benchmark's own reader found."""
    ours = [len(s) for s in train[: len(lengths)]]
    if ours != lengths:
        bad = next(i for i, (a, b) in enumerate(zip(ours, lengths, strict=False)) if a != b) if ours else 0
        sys.exit(f"flair_peer: sentence {bad} has {ours[bad : bad + 1]} tokens in Flair, {lengths[bad]} in ours")


def main() -> None:
    args = parse()
    logging.getLogger("flair").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    plan = json.loads(args.batches.read_text())
    setup = time.perf_counter()
    corpus, train = load_corpus(args.data)
    check_same_sentences(train, plan["lengths"])
    with tempfile.TemporaryDirectory(prefix="flair-glove-") as tmp:
        tagger = build_tagger(corpus, train, keyed_vectors(args.vectors, Path(tmp)), args)
    setup = time.perf_counter() - setup
    sentences = train[: len(plan["lengths"])]
    result = {
        "flair": flair.__version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "params": sum(p.numel() for p in tagger.parameters() if p.requires_grad),  # GloVe is frozen: not counted
        "rnn_input_size": tagger.rnn.input_size,
        "setup_seconds": setup,
        "train_same_batches": train_pass(tagger, sentences, plan["batches"], args),
        "train_shuffled": train_pass(tagger, sentences, shuffled_batches(len(sentences), args.batch_size), args),
    }
    if args.tag_input:
        result["tag"] = tag_file(tagger, args.tag_input, args.tag_output, args.tag_batch_size, args.chunk_chars)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
