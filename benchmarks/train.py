"""Training throughput: our tagger vs a bare `nn.LSTM` of the same size on the same batches (the ceiling).

    python -m benchmarks.train [--sentences 3000] [--threads 2] [--batch-size 10] [model.hidden_size=100 ...]

Composes the real default config (conf/, plus any Hydra overrides), builds the real model with GloVe
(`ner.training.pipeline.build`), and times one epoch of the real training step, `ner.training.trainer.train_epoch`
(bucketed batches, dropout, CRF loss, clipping, optimiser step), over the first N training sentences, after a short
warm-up. The ceiling is an `nn.LSTM` with the same input and hidden sizes doing forward + backward + SGD step on the
same padded batches with no embeddings, no CRF and no packing.
"""

from __future__ import annotations

from benchmarks import harness


def main() -> None:
    ap = harness.parser("train", __doc__)
    ap.add_argument("--sentences", type=int, default=3000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=None, help="default: trainer.batch_size from conf/")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model.hidden_size=100")
    args = ap.parse_args()
    overrides = [*args.overrides, *([f"trainer.batch_size={args.batch_size}"] if args.batch_size else [])]
    sample = harness.training_sample(overrides, args.sentences, args.threads)
    ours = harness.time_epoch(sample)
    rnn = sample.model.rnn
    bare = harness.time_ceiling(rnn.input_size, rnn.hidden_size, sample.lengths, sample.batches, rnn.bidirectional)
    m, info = sample.model.cfg, harness.machine()
    print(f"machine: {info['cpu']}, {args.threads} threads, torch {info['torch']}")
    print(
        f"model: {'bi' if m.bidirectional else ''}{m.cell} {m.hidden_size}, char {m.char_encoder} {m.char_hidden}, "
        f"head {m.head}, batch {sample.trainer.batch_size}, {len(sample.enc)} sentences / {sample.tokens} tokens"
    )
    print("| what | tokens/s |\n|---|---|")
    print(f"| ner tagger, train_epoch (embeddings + chars + {m.cell} + {m.head} + clip + step) | {ours.per_s:,.0f} |")
    print(f"| bare nn.LSTM, same sizes, fwd + bwd + step (ceiling) | {bare.per_s:,.0f} |")
    print(f"| ratio ours / ceiling | {ours.per_s / bare.per_s:.2f} |")


if __name__ == "__main__":
    main()
