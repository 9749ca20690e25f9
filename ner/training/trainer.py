"""The training loop: epochs of bucketed batches, dev F1 after each, early stopping, best checkpoint kept.

It knows nothing of Hydra or MLflow: it takes plain dataclasses and reports each epoch to a callback, which is
where `ner.train` plugs tracking in. That keeps it callable (and testable) on its own.

Past 400 lines on purpose: the config, the lr schedule, the epoch loop and the resume state it checkpoints are one
contract (a resumed run must reach the result of an uninterrupted one, the schedule ends where the loop stops), so
they stay side by side.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from ner import config
from ner.data.batching import Encoded, bucketed
from ner.data.corpus import Sentences
from ner.evaluation import metrics
from ner.model.engine import Engine
from ner.model.tagger import Tagger
from ner.training import checkpoint
from ner.training.objectives import Objective


@dataclass
class TrainerConfig:
    max_epochs: int = 100  # upper bound on epochs
    patience: int = 0  # stop after this many epochs without a better dev F1 (0 = never stop early)
    max_minutes: float = 0.0  # wall-clock budget for training; 0 = none
    optimizer: str = "sgd"  # sgd (with momentum, as in the papers) | adam
    lr: float = 0.015  # initial learning rate
    momentum: float = 0.9  # SGD momentum
    lr_schedule: str = "inverse"  # inverse: lr / (1 + lr_decay * e) | linear: down to lr / n at the run's last epoch n
    lr_decay: float = 0.05  # lr at epoch e = lr / (1 + lr_decay * e) (lr_schedule=inverse)
    anneal_patience: int = 0  # also multiply the lr by anneal_factor after N epochs without a better dev F1 (0 = off)
    anneal_factor: float = 0.5  # see anneal_patience
    ema_decay: float = 0.0  # evaluate and keep an exponential moving average of the weights, e.g. 0.999 (0 = off)
    swa_from: int = 0  # evaluate and keep the mean of the weights at the end of every epoch from this one on (0 = off)
    weight_decay: float = 0.0  # L2 penalty
    clip: float = 5.0  # gradient norm clipping; 0 = off
    batch_size: int = 10  # sequences per training batch: sentences, or runs of them (model.context_tokens)
    eval_batch_size: int = 512  # sentences per inference batch
    threads: int = 1  # torch CPU threads: 2 collapse several-fold beside any other busy process (benchmarks.threads)
    device: str = "cpu"  # cpu | cuda | cuda:N
    progress: bool = True  # show a progress bar per epoch
    resume: str | None = None  # continue an interrupted run: its MLflow run id, or "last"
    checkpoint_dir: str | None = None  # where per-epoch checkpoints go (None = ./mlruns/checkpoints)
    keep_checkpoint: bool = False  # keep the checkpoint after a run finishes (it is always kept on failure)
    train_with_dev: bool = False  # train on train + dev for the fixed schedule above: no dev score, no early stop
    teachers: list[str] = field(default_factory=list)  # distil: model URIs whose averaged marginals it also learns
    teacher_weight: float = 0.5  # share of the teachers' marginals in the targets (the rest: the gold tags)
    teacher_temperature: float = 1.0  # teachers' scores divided by it: softer marginals on their own training text
    lm_weight: float = 0.0  # co-train a language model on the recurrent states, this much of the loss (0 = off)
    lm_vocab: int = 3000  # words the language model predicts (the most frequent training words; others: 1 class)

    def __post_init__(self) -> None:
        config.choice("trainer.optimizer", self.optimizer, ("sgd", "adam"))
        config.choice("trainer.lr_schedule", self.lr_schedule, ("inverse", "linear"))
        for key, low in (("max_epochs", 1), ("batch_size", 1), ("eval_batch_size", 1)):
            config.at_least(f"trainer.{key}", getattr(self, key), low)
        nonnegative = ("patience", "max_minutes", "lr_decay", "anneal_patience", "weight_decay", "clip", "threads")
        for key in (*nonnegative, "swa_from"):
            config.at_least(f"trainer.{key}", getattr(self, key), 0)
        if not self.lr > 0:
            raise config.ConfigError(f"trainer.lr={self.lr} must be > 0")
        if not 0.0 <= self.momentum < 1.0 or not 0.0 <= self.ema_decay < 1.0:
            raise config.ConfigError("trainer.momentum and trainer.ema_decay must be in [0, 1)")
        if self.ema_decay and self.swa_from:
            raise config.ConfigError("trainer.ema_decay and trainer.swa_from are two ways to average: set one to 0")
        if not 0.0 < self.anneal_factor <= 1.0:
            raise config.ConfigError(f"trainer.anneal_factor={self.anneal_factor} must be in (0, 1]")
        config.device("trainer.device", self.device)
        if not 0.0 < self.teacher_weight <= 1.0:
            raise config.ConfigError(f"trainer.teacher_weight={self.teacher_weight} must be in (0, 1]")
        if not self.teacher_temperature > 0.0:
            raise config.ConfigError(f"trainer.teacher_temperature={self.teacher_temperature} must be above 0")
        config.at_least("trainer.lm_weight", self.lm_weight, 0)
        config.at_least("trainer.lm_vocab", self.lm_vocab, 1)
        if self.train_with_dev and (self.patience or self.anneal_patience):
            raise config.ConfigError(
                "trainer.train_with_dev=true leaves no dev set to stop or anneal on: set trainer.patience=0 and "
                "trainer.anneal_patience=0, and fix the schedule with trainer.max_epochs (experiment=train_with_dev)"
            )


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
    best_epoch: int = 0
    best_dev_f1: float = -1.0
    best_state: dict = field(default_factory=dict)
    history: list[EpochResult] = field(default_factory=list)
    stopped: str = "max_epochs"
    seconds: float = 0.0


class Stop(KeyboardInterrupt):
    """Raised between batches when a stop was requested (SIGINT / SIGTERM): the run ends as KILLED."""


def make_optimizer(params: Iterable[torch.nn.Parameter], cfg: TrainerConfig) -> torch.optim.Optimizer:
    params = list(params)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    # fused: one kernel per parameter instead of several passes (the step over the word embeddings is not small)
    return torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=cfg.device == "cpu"
    )


@dataclass
class Loop:
    """The mutable state of one training run; `state()`/`restore()` make it a checkpoint and back."""

    model: Tagger
    cfg: TrainerConfig
    seed: int
    result: FitResult = field(default_factory=FitResult)
    epoch: int = 0
    objective: Objective | None = None  # the loss; None: the tagger's own loss of the gold tags

    def __post_init__(self) -> None:
        self.objective = self.objective or Objective(self.model)
        self.optimizer = make_optimizer(self.objective.trainable(), self.cfg)
        self.lr_scale = 1.0  # lowered by plateau annealing
        self.last_epoch = self.cfg.max_epochs  # where a linear schedule ends: re-estimated after each epoch (fit)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda done: self.lr_factor(done))
        self.rng = random.Random(self.seed)
        averaged = self.cfg.ema_decay or self.cfg.swa_from
        self.average = Average(self.model, self.cfg.ema_decay) if averaged else None

    def lr_factor(self, done: int) -> float:
        """The lr multiplier of the epoch after `done` finished ones.

        linear (budgeted training, Li et al. 2020): the lr reaches lr / n in the last epoch n, wherever the time
        budget puts it, so a slow machine's run ends annealed instead of cut off mid-schedule at a high lr.
        """
        if self.cfg.lr_schedule == "linear":
            return self.lr_scale * max(self.last_epoch - done, 1) / self.last_epoch
        return self.lr_scale / (1.0 + self.cfg.lr_decay * done)

    def averaging(self) -> bool:
        """Whether dev is scored (and the model kept) with the averaged weights after this epoch."""
        return self.average is not None and (not self.cfg.swa_from or self.epoch >= self.cfg.swa_from)

    def end_epoch(self) -> None:
        """SWA (Izmailov et al. 2018): the average becomes the mean of the weights at the ends of epochs swa_from
        to this one (the mean of n is a lerp by 1/n, so nothing but the mean itself is kept or checkpointed)."""
        if self.cfg.swa_from and self.epoch >= self.cfg.swa_from:
            self.average.update(1.0 / (self.epoch - self.cfg.swa_from + 1))

    def anneal(self) -> None:
        """Plateau annealing (as Flair's trainer does): a smaller step once dev F1 stops improving."""
        since_best = self.epoch - self.result.best_epoch
        if self.cfg.anneal_patience and since_best and since_best % self.cfg.anneal_patience == 0:
            self.lr_scale *= self.cfg.anneal_factor

    def state(self) -> dict:
        return {
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "lr_scale": self.lr_scale,
            "average": self.average.weights if self.average else None,
            "rng": {"loop": self.rng.getstate(), "torch": torch.get_rng_state(), "python": random.getstate()},
            "best_epoch": self.result.best_epoch,
            "best_dev_f1": self.result.best_dev_f1,
            "best_state": self.result.best_state,
            "history": [asdict(h) for h in self.result.history],
            "seconds": self.result.seconds,
            "objective": self.objective.extra_state(),
        }

    def restore(self, state: dict) -> None:
        self.epoch = state["epoch"]
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.lr_scale = state.get("lr_scale", 1.0)
        self.objective.load_extra_state(state.get("objective"))
        if self.average and state.get("average"):
            torch._foreach_copy_(self.average.weights, state["average"])
        self.rng.setstate(state["rng"]["loop"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        self.result = FitResult(
            state["best_epoch"],
            state["best_dev_f1"],
            state["best_state"],
            [EpochResult(**h) for h in state["history"]],
            seconds=state["seconds"],
        )


class Average:
    """An average of the trainable weights: exponential after every step (Polyak averaging, `ema_decay`), or the
    plain mean of epoch ends (SWA, `swa_from`; `Loop.end_epoch`).

    Late in training SGD keeps hopping around a minimum; the average sits nearer its centre, so dev F1 is read,
    and the best model kept, with the averaged weights swapped in (`swapped_in`).
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        # detached views share storage with the parameters, which the optimiser updates in place: built once
        self.params = [p.detach() for p in model.parameters() if p.requires_grad]
        self.weights = [p.clone() for p in self.params]

    @torch.no_grad()
    def update(self, weight: float | None = None) -> None:
        """Move the average `weight` of the way to the current weights (default: 1 - decay)."""
        torch._foreach_lerp_(self.weights, self.params, 1.0 - self.decay if weight is None else weight)

    @torch.no_grad()
    def copy_in(self) -> None:
        """Make the averaged weights the model's own."""
        torch._foreach_copy_(self.params, self.weights)

    @contextlib.contextmanager
    def swapped_in(self):
        """The model holds the averaged weights inside the block, its own ones again after it."""
        with torch.no_grad():
            current = [p.clone() for p in self.params]
            torch._foreach_copy_(self.params, self.weights)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.params, current)


def fit(
    model: Tagger,
    train: Encoded,
    dev: Sentences | None,
    cfg: TrainerConfig,
    seed: int,
    on_epoch: Callable[[EpochResult], None] | None = None,
    checkpoint_path: Path | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    objective: Objective | None = None,
) -> FitResult:
    """Train until max_epochs, patience or the time budget; return the best-on-dev weights loaded in `model`, or
    with no `dev` (train + dev in training) the last epoch's, a schedule fixed in advance.

    With `checkpoint_path`, the full state is saved after every epoch, and an existing checkpoint there is
    resumed from: the continued run replays the same batches and dropout masks as an uninterrupted one. The run's
    lock (`checkpoint.hold`) is taken first and kept until the process exits.
    """
    device = torch.device(cfg.device)
    model.to(device)
    loop = Loop(model, cfg, seed, objective=objective)
    if checkpoint_path is not None:  # one process per run: a second one is refused, naming this one
        checkpoint.hold(checkpoint_path.parent, f"checkpoint {checkpoint_path}")
    if checkpoint_path is not None and checkpoint_path.is_file():
        loop.restore(checkpoint.load(checkpoint_path))
        print(f"resumed from {checkpoint_path} after epoch {loop.epoch}", flush=True)
    result = loop.result
    engine = Engine(model, batch_size=cfg.eval_batch_size, device=device)  # reads the weights as they train
    started = time.perf_counter() - result.seconds
    if cfg.lr_schedule == "linear":
        budget = f", or sooner the last one the {cfg.max_minutes:g}-minute budget allows" if cfg.max_minutes else ""
        print(f"lr schedule: linear, down to lr / n in the last epoch n (epoch {cfg.max_epochs}{budget})", flush=True)
    stopped = _stop_reason(loop, cfg, started) if loop.epoch else None
    while stopped is None:
        loop.epoch += 1
        res = _run_epoch(loop, train, dev, engine, device, should_stop)
        result.seconds = time.perf_counter() - started
        loop.last_epoch = epochs_that_fit(cfg, loop.epoch, result.seconds)
        loop.schedule.step()
        if on_epoch:  # before the checkpoint: a kill in between replays this epoch and logs the same values again
            on_epoch(res)
        if checkpoint_path is not None:
            checkpoint.save(checkpoint_path, loop.state())
        stopped = _stop_reason(loop, cfg, started)
    result.stopped = stopped
    if dev is not None:
        model.load_state_dict(result.best_state)
    elif loop.averaging():  # train + dev: the last epoch's average is the model, as dev would have scored it
        loop.average.copy_in()
    return result


def _run_epoch(loop: Loop, train: Encoded, dev: Sentences, engine: Engine, device, should_stop) -> EpochResult:
    t0 = time.perf_counter()
    cfg, result, epoch = loop.cfg, loop.result, loop.epoch
    after_step = loop.average.update if loop.average and cfg.ema_decay else None
    loss, tps = train_epoch(
        loop.model, train, loop.optimizer, cfg, loop.rng, device, epoch, should_stop, after_step, loop.objective
    )
    lr = loop.optimizer.param_groups[0]["lr"]
    loop.end_epoch()
    dev_scores: dict[str, float] = {}
    if dev is None:  # train + dev: nothing to select on; the last epoch is the model
        result.best_epoch = epoch
    else:
        with loop.average.swapped_in() if loop.averaging() else contextlib.nullcontext():
            dev_scores = metrics.score(dev.gold, engine.predict(dev.tokens, dev.documents))
            if dev_scores["f1"] > result.best_dev_f1:
                result.best_epoch, result.best_dev_f1 = epoch, dev_scores["f1"]
                result.best_state = copy.deepcopy(loop.model.state_dict())
    loop.anneal()
    res = EpochResult(epoch, loss, tps, lr, dev_scores, time.perf_counter() - t0)
    result.history.append(res)
    dev_line = (
        "no dev (trained on it)"
        if dev is None
        else (
            f"dev P {dev_scores['precision']:.2f}  R {dev_scores['recall']:.2f}  F1 {dev_scores['f1']:.2f}  (best "
            f"{result.best_dev_f1:.2f} @ {result.best_epoch})"
        )
    )
    print(
        f"epoch {epoch:3d}  loss {loss:8.4f}  {tps:7.0f} tok/s  lr {lr:.4g}  {dev_line}  {res.seconds:.0f}s", flush=True
    )
    return res


def epochs_that_fit(cfg: TrainerConfig, done: int, elapsed: float) -> int:
    """The epoch a run will end at: max_epochs, or the last whole epoch the time budget holds at the mean epoch
    time so far (`done` epochs in `elapsed` seconds). The run stops there, and a linear lr schedule ends there."""
    if not cfg.max_minutes or not done or elapsed <= 0:
        return cfg.max_epochs
    return max(1, min(cfg.max_epochs, math.floor(60 * cfg.max_minutes / (elapsed / done))))


def _stop_reason(loop: Loop, cfg: TrainerConfig, started: float) -> str | None:
    if loop.epoch >= cfg.max_epochs:
        return "max_epochs"
    if cfg.patience and loop.epoch - loop.result.best_epoch >= cfg.patience:
        return "patience"
    if loop.epoch >= epochs_that_fit(cfg, loop.epoch, time.perf_counter() - started):  # another would overrun
        return "time budget"
    return None


def train_epoch(
    model: Tagger,
    train: Encoded,
    optimizer: torch.optim.Optimizer,
    cfg: TrainerConfig,
    rng: random.Random,
    device: torch.device,
    epoch: int,
    should_stop: Callable[[], bool] = lambda: False,
    after_step: Callable[[], None] | None = None,
    objective: Objective | None = None,
) -> tuple[float, float]:
    """One pass over shuffled length buckets; returns (mean loss per sentence, tokens per second).

    A non-finite loss stops at once, before the optimiser step, so the last checkpoint holds good weights.
    """
    model.train()
    batches = bucketed([len(f) for f in train.forms], cfg.batch_size, rng=rng)
    total_loss, tokens, sentences = 0.0, 0, 0
    t0 = time.perf_counter()
    # a bar only on a terminal: redirected (CI, nohup, > train.log) it would be kilobytes of redraws per epoch,
    # and the one line per epoch that fit prints says what the bar would
    bar = tqdm(batches, desc=f"epoch {epoch}", disable=not (cfg.progress and sys.stderr.isatty()), leave=False)
    for step, index in enumerate(bar, start=1):
        batch = train.batch(index).to(device)
        loss = model.loss(batch) if objective is None else objective(batch)
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(
                f"training loss became {value} at epoch {epoch}, batch {step}; the last good checkpoint is "
                "kept. Lower trainer.lr or set trainer.clip."
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip:
            params = model.parameters() if objective is None else objective.trainable()
            torch.nn.utils.clip_grad_norm_(params, cfg.clip, foreach=True)
        optimizer.step()
        if after_step is not None:
            after_step()
        if should_stop():
            raise Stop(f"stopped during epoch {epoch}")
        total_loss += value * len(index)
        sentences += len(index)
        tokens += int(batch.lengths.sum())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{total_loss / sentences:.3f}", tok_s=f"{tokens / (time.perf_counter() - t0):.0f}")
    return total_loss / max(sentences, 1), tokens / (time.perf_counter() - t0)
