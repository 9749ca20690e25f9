"""The training loop: epochs of bucketed batches, dev F1 after each, early stopping, best checkpoint kept.

It knows nothing of Hydra or MLflow: it takes plain dataclasses and reports each epoch to a callback, which is
where `ner.train` plugs tracking in. That keeps it callable (and testable) on its own.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from ner import metrics
from ner.batching import Encoded, bucketed
from ner.model import Tagger
from ner.predict import predict_tags


@dataclass
class TrainerConfig:
    max_epochs: int = 50  # upper bound on epochs
    patience: int = 8  # stop after this many epochs without a better dev F1 (0 = never stop early)
    max_minutes: float = 0.0  # wall-clock budget for training; 0 = none
    optimizer: str = "sgd"  # sgd (with momentum, as in the papers) | adam
    lr: float = 0.015  # initial learning rate
    momentum: float = 0.9  # SGD momentum
    lr_decay: float = 0.05  # lr at epoch e = lr / (1 + lr_decay * e)
    weight_decay: float = 0.0  # L2 penalty
    clip: float = 5.0  # gradient norm clipping; 0 = off
    batch_size: int = 10  # sentences per training batch
    eval_batch_size: int = 512  # sentences per inference batch
    threads: int = 2  # torch CPU threads (use 1 when other processes share the cores)
    device: str = "cpu"  # cpu | cuda | cuda:N
    progress: bool = True  # show a progress bar per epoch

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"trainer.optimizer={self.optimizer!r} is not one of sgd, adam")


@dataclass
class EpochResult:
    epoch: int
    train_loss: float
    tokens_per_s: float
    lr: float
    dev: dict[str, float]
    seconds: float


@dataclass
class FitResult:
    best_epoch: int
    best_dev_f1: float
    best_state: dict
    history: list[EpochResult] = field(default_factory=list)
    stopped: str = "max_epochs"
    seconds: float = 0.0


def make_optimizer(model: Tagger, cfg: TrainerConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def fit(
    model: Tagger,
    train: Encoded,
    dev: Encoded,
    dev_gold: list[list[str]],
    cfg: TrainerConfig,
    seed: int,
    on_epoch: Callable[[EpochResult], None] | None = None,
) -> FitResult:
    """Train until max_epochs, patience or the time budget runs out; return the best-on-dev weights."""
    device = torch.device(cfg.device)
    model.to(device)
    optimizer = make_optimizer(model, cfg)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0 / (1.0 + cfg.lr_decay * e))
    rng = random.Random(seed)
    result = FitResult(best_epoch=0, best_dev_f1=-1.0, best_state={})
    start = time.perf_counter()
    for epoch in range(1, cfg.max_epochs + 1):
        t0 = time.perf_counter()
        loss, tps = train_epoch(model, train, optimizer, cfg, rng, device, epoch)
        lr = optimizer.param_groups[0]["lr"]
        schedule.step()
        dev_scores = metrics.score(dev_gold, predict_tags(model, dev, batch_size=cfg.eval_batch_size, device=device))
        res = EpochResult(epoch, loss, tps, lr, dev_scores, time.perf_counter() - t0)
        result.history.append(res)
        if dev_scores["f1"] > result.best_dev_f1:
            result.best_epoch, result.best_dev_f1 = epoch, dev_scores["f1"]
            result.best_state = copy.deepcopy(model.state_dict())
        print(
            f"epoch {epoch:3d}  loss {loss:8.4f}  {tps:7.0f} tok/s  lr {lr:.4g}  dev P {dev_scores['precision']:.2f}"
            f"  R {dev_scores['recall']:.2f}  F1 {dev_scores['f1']:.2f}  (best {result.best_dev_f1:.2f} @ "
            f"{result.best_epoch})  {res.seconds:.0f}s",
            flush=True,
        )
        if on_epoch:
            on_epoch(res)
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"training loss became {loss} at epoch {epoch}; lower trainer.lr or set trainer.clip"
            )
        if cfg.patience and epoch - result.best_epoch >= cfg.patience:
            result.stopped = "patience"
            break
        if cfg.max_minutes and (time.perf_counter() - start) / 60 >= cfg.max_minutes:
            result.stopped = "time budget"
            break
    result.seconds = time.perf_counter() - start
    model.load_state_dict(result.best_state)
    return result


def train_epoch(
    model: Tagger,
    train: Encoded,
    optimizer: torch.optim.Optimizer,
    cfg: TrainerConfig,
    rng: random.Random,
    device: torch.device,
    epoch: int,
) -> tuple[float, float]:
    """One pass over shuffled length buckets; returns (mean loss per sentence, tokens per second)."""
    model.train()
    batches = bucketed([len(f) for f in train.forms], cfg.batch_size, rng=rng)
    total_loss, tokens, sentences = 0.0, 0, 0
    t0 = time.perf_counter()
    bar = tqdm(batches, desc=f"epoch {epoch}", disable=not cfg.progress, leave=False, unit="batch")
    for step, index in enumerate(bar, start=1):
        batch = train.batch(index).to(device)
        loss = model.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        optimizer.step()
        total_loss += loss.item() * len(index)
        sentences += len(index)
        tokens += int(batch.lengths.sum())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{total_loss / sentences:.3f}", tok_s=f"{tokens / (time.perf_counter() - t0):.0f}")
    return total_loss / max(sentences, 1), tokens / (time.perf_counter() - t0)
