"""Why gated cells, measured: how much of the loss at one token reaches the input k tokens away.

Definition. For a sentence x_1..x_n (x_j = the encoder's input at token j: word, casing and character features,
i.e. `Tagger.embed`'s output) and a prediction position t, let

    L_t = cross-entropy of the emission scores at t against the gold tag at t

and measure ||dL_t / dx_j|| (L2 over the feature dimension) for every pair (t, j) of real tokens. The profile at
distance k is the mean of these norms over all pairs with distance k and over the sentences of the batch:

* unidirectional encoder: k = t - j >= 0 (the encoder reads left to right, so dL_t/dx_j is exactly 0 for j > t:
  those pairs carry no information and are left out rather than averaged in as zeros);
* bidirectional encoder: k = |t - j|, both ways (the backward direction carries the right context).

Why L_t and not the training loss: the CRF's sentence loss depends on every position at once, so it has no
"distance from the prediction". L_t is the per-token loss of a softmax head (exactly its training-loss term at t)
and, for a CRF head, the local part of its loss: the CRF's transitions do not touch the input, so whatever reaches
x_{t-k} from position t passes through the recurrent encoder, which is what differs between rnn, gru and lstm.
Dropout is off during the measurement (eval mode) so that the profile is a property of the weights, not of noise.

A vanilla RNN's profile falls off exponentially with k (Bengio et al. 1994; Pascanu et al. 2013); gated cells keep
it nearly flat over the distances NER needs, which is where long sentences are won or lost.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import mlflow
import torch
from torch import nn

from ner.data.batching import Batch, Encoded
from ner.model.tagger import Tagger
from ner.tracking import store

LOGGED_DISTANCES = (0, 1, 2, 5, 10, 20, 30, 40, 50)  # logged as grad_norm_d{k} metrics; the JSON has every k
PROFILE_POSITIONS = 20  # prediction positions per sentence in the per-epoch profile (all T would cost T passes)


def jacobian_norms(model: Tagger, batch: Batch, positions: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(t, norms): the prediction positions t (P,) and norms (B, P, T) with [b, p, j] = ||dL_{t_p} / dx_j||.

    One backward pass per position: sentence b's L_t depends only on sentence b's inputs (eval mode, no
    batch-level statistics), so a single pass gives the row for every sentence of the batch at once. The cost is
    P passes over a (B, T) batch; `positions` > 0 spreads that many positions evenly over 0..T-1 (first and last
    included) instead of taking all T, which keeps every distance covered at a fraction of the cost.
    """
    if batch.tags is None:
        raise ValueError("gradient profile needs gold tags: encode the sentences with their tags")
    length = batch.words.size(1)
    count = min(positions, length) if positions > 0 else length
    steps = torch.linspace(0, length - 1, count).round().long().unique()  # (P,)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):  # cuDNN RNNs have no eval backward
            features = model.embed(batch).detach().requires_grad_(True)  # (B, T, D)
            emissions = model.emissions(batch, features=features)  # (B, T, K)
            token_loss = nn.functional.cross_entropy(emissions.transpose(1, 2), batch.tags, reduction="none")  # (B, T)
            token_loss = token_loss * batch.mask
            rows = []
            for t in steps.tolist():
                (grad,) = torch.autograd.grad(token_loss[:, t].sum(), features, retain_graph=True)
                rows.append(grad.norm(dim=2))  # (B, T): ||dL_t / dx_j|| for every j
    finally:
        model.train(was_training)
    return steps, torch.stack(rows, dim=1).detach()  # (P,), (B, P, T)


def timestep_grad_norms(model: Tagger, batch: Batch, max_distance: int = 50, positions: int = 0) -> torch.Tensor:
    """(max_distance + 1,) mean ||dL_t / dx_{t-k}|| for k = 0..max_distance (see the module docstring).

    `positions` > 0 measures from that many evenly spaced positions t instead of all of them (see
    `jacobian_norms`). Distances that no pair of tokens in the batch reaches are NaN.
    """
    steps, norms = jacobian_norms(model, batch, positions)  # (P,), (B, P, T)
    steps = steps.to(norms.device)
    distance = steps[:, None] - torch.arange(norms.size(2), device=norms.device)[None, :]  # (P, T): t - j
    if model.cfg.bidirectional:
        distance = distance.abs()
    real = batch.mask.to(norms.device)
    pairs = real[:, steps, None] & real[:, None, :] & (distance >= 0) & (distance <= max_distance)  # (B, P, T)
    index = distance.expand_as(norms)[pairs]
    sums = torch.zeros(max_distance + 1, dtype=norms.dtype, device=norms.device).index_add_(0, index, norms[pairs])
    counts = torch.zeros_like(sums).index_add_(0, index, torch.ones_like(norms[pairs]))
    return (sums / counts).cpu()  # 0 / 0 = NaN where no pair has that distance


def profile_batch(encoded: Encoded, size: int = 16, min_length: int = 30, max_length: int = 80) -> list[int]:
    """A fixed set of long sentences: the `size` longest with at most `max_length` tokens, longest first.

    Fixed (no randomness) so that the profiles of different epochs and runs are measured on the same sentences;
    long so that large distances exist at all; capped because the cost grows with T^2. If the corpus has fewer
    than `size` sentences of `min_length` tokens or more, the longest ones it has are used.
    """
    lengths = [len(f) for f in encoded.forms]
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    capped = [i for i in order if lengths[i] <= max_length] or order
    long = [i for i in capped if lengths[i] >= min_length]
    return (long if len(long) >= size else capped)[:size]


def log_gradient_profile(
    model: Tagger, encoded: Encoded, step: int, max_distance: int = 50, positions: int = PROFILE_POSITIONS
) -> None:
    """Log the profile of the current weights to the active MLflow run (about a second for a BiLSTM-200 on CPU).

    Metrics `gradients/norm_d{k}` (at `step`, for the distances in LOGGED_DISTANCES that the batch reaches), and the
    artifacts `gradients/grad_norm_epoch{step}.png` (log scale) and `.json` (every distance, plus what was measured).
    """
    device = next(model.parameters()).device
    index = profile_batch(encoded)
    batch = encoded.batch(index).to(device)
    profile = timestep_grad_norms(model, batch, max_distance, positions).tolist()
    metrics = {
        f"grad_norm_d{k}": profile[k] for k in LOGGED_DISTANCES if k <= max_distance and profile[k] == profile[k]
    }
    mlflow.log_metrics(store.logged(metrics), step=step)
    label = f"{'bi' if model.cfg.bidirectional else ''}{model.cfg.cell}"
    info = {
        "step": step,
        "model": label,
        "distance": list(range(max_distance + 1)),
        "grad_norm": [v if v == v else None for v in profile],  # NaN -> null: JSON has no NaN
        "sentences": len(index),
        "positions": positions,
        "lengths": [len(encoded.forms[i]) for i in index],
        "definition": "mean over (sentence, t, j) of ||d CE(emissions_t, gold_t) / d x_j||, distance t-j "
        "(|t-j| for bidirectional encoders), eval mode",
    }
    with tempfile.TemporaryDirectory() as tmp:
        stem = Path(tmp) / f"grad_norm_epoch{step}"
        stem.with_suffix(".json").write_text(json.dumps(info, indent=1))
        plot_profiles({label: profile}, stem.with_suffix(".png"), f"{label}: gradient reaching the input (step {step})")
        mlflow.log_artifacts(tmp, "gradients")


def plot_profiles(profiles: dict[str, list[float]], path: str | Path, title: str) -> None:
    """Gradient norm against distance, one line per profile, log-scale y: exponential decay is a straight line.

    Left: the norms themselves. Right: divided by the norm at distance 0, which removes the loss scale (a confident
    model has small gradients everywhere) and leaves the shape, the part that differs between rnn, gru and lstm.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (raw, rel) = plt.subplots(1, 2, figsize=(11, 4))
    for label, values in profiles.items():
        points = [(k, v) for k, v in enumerate(values) if v is not None and v == v and v > 0]
        if not points:
            continue
        raw.plot(*zip(*points, strict=True), marker=".", label=label)
        base = values[0] if values[0] else points[0][1]
        rel.plot([k for k, _ in points], [v / base for _, v in points], marker=".", label=label)
    for ax, ylabel in ((raw, "mean ||dL_t / dx_(t-k)||"), (rel, "relative to distance 0")):
        ax.set_yscale("log")
        ax.set_xlabel("distance k from the predicted token (tokens)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
