"""Training throughput: our tagger vs a bare `nn.LSTM` of the same size on the same batches (the ceiling).

    python pipelines/bench_train.py [--sentences 3000] [--threads 2] [--batch-size 10] [--model-override k=v ...]

Composes the real default config (conf/), builds the real model with GloVe, and times optimiser steps over the
first N training sentences in bucketed batches. The ceiling is an `nn.LSTM` with the same input and hidden sizes
doing forward + backward + SGD step on the same padded batches with no embeddings, no CRF and no packing.
"""

from __future__ import annotations

import argparse
import platform
import random
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from ner.data import schemes
from ner.data.batching import bucketed
from ner.data.corpus import tag_strings
from ner.training.pipeline import build
from ner.training.trainer import TrainerConfig, make_optimizer

ROOT = Path(__file__).resolve().parents[1]


def ours(model, enc, batches, cfg: TrainerConfig) -> float:
    opt = make_optimizer(model, cfg)
    model.train()
    tokens, t0 = 0, time.perf_counter()
    for index in batches:
        batch = enc.batch(index)
        loss = model.loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip, foreach=True)
        opt.step()
        tokens += int(batch.lengths.sum())
    return tokens / (time.perf_counter() - t0)


def bare_lstm(model, enc, batches) -> float:
    rnn = model.rnn
    lstm = torch.nn.LSTM(rnn.input_size, rnn.hidden_size, batch_first=True, bidirectional=rnn.bidirectional)
    opt = torch.optim.SGD(lstm.parameters(), lr=0.01)
    tokens, t0 = 0, time.perf_counter()
    for index in batches:
        lengths = [len(enc.forms[i]) for i in index]
        x = torch.randn(len(index), max(lengths), rnn.input_size)
        out, _ = lstm(x)
        loss = out.pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        tokens += sum(lengths)
    return tokens / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sentences", type=int, default=3000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=None, help="default: trainer.batch_size from conf/")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model.hidden_size=100")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=args.overrides)
    trainer_cfg = TrainerConfig(**cfg.trainer)
    batch_size = args.batch_size or trainer_cfg.batch_size
    torch.manual_seed(0)
    data_cfg, corpus, _, featurizer, model = build(cfg)
    train = corpus["train"].select(range(min(args.sentences, len(corpus["train"]))))
    enc = featurizer.encode(train["tokens"], [schemes.convert(t, data_cfg.train_scheme) for t in tag_strings(train)])
    batches = bucketed([len(f) for f in enc.forms], batch_size, rng=random.Random(0))
    ours(model, enc, batches[:20], trainer_cfg)  # warm-up
    ours_tps = ours(model, enc, batches, trainer_cfg)
    bare_tps = bare_lstm(model, enc, batches)
    m = model.cfg
    cpu = platform.processor() or platform.machine()
    print(f"machine: {cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(
        f"model: {'bi' if m.bidirectional else ''}{m.cell} {m.hidden_size}, char {m.char_encoder} {m.char_hidden}, "
        f"head {m.head}, batch {batch_size}, {len(enc)} sentences / {sum(map(len, enc.forms))} tokens"
    )
    print("| what | tokens/s |\n|---|---|")
    print(f"| ner tagger (embeddings + chars + {m.cell} + {m.head} + clip + step) | {ours_tps:,.0f} |")
    print(f"| bare nn.LSTM, same sizes, fwd + bwd + step (ceiling) | {bare_tps:,.0f} |")
    print(f"| ratio ours / ceiling | {ours_tps / bare_tps:.2f} |")


if __name__ == "__main__":
    main()
