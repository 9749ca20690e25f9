"""A linear-chain CRF in three small parts: allowed transitions, the log-likelihood, and Viterbi.

Both the forward algorithm and Viterbi loop over time steps only; every step is one batched tensor operation, so a
batch of 256 sentences costs the same Python overhead as one. Transitions that the tag scheme forbids (O -> I-PER,
B-LOC -> I-PER, ...) are masked out in training and decoding alike, so the model can never emit them.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from ner.schemes import split_tag

NEG = -1e4  # a score low enough to exclude a path, small enough to stay finite in float32


def allowed_transitions(scheme: str, labels: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Boolean masks (start (K,), end (K,), transitions (K, K) from -> to) of what `scheme` allows."""
    parts = [split_tag(t) for t in labels]
    k = len(labels)
    start = torch.ones(k, dtype=torch.bool)
    end = torch.ones(k, dtype=torch.bool)
    trans = torch.ones(k, k, dtype=torch.bool)
    for j, (p, typ) in enumerate(parts):
        if scheme == "iob2":
            start[j] = p != "I"
        elif scheme == "bioes":
            start[j] = p in ("O", "B", "S")
            end[j] = p in ("O", "E", "S")
        elif scheme == "iob1":
            start[j] = p != "B"
        for i, (q, prev_typ) in enumerate(parts):
            trans[i, j] = _allowed(scheme, q, prev_typ, p, typ)
    return start, end, trans


def _allowed(scheme: str, q: str, prev_typ: str, p: str, typ: str) -> bool:
    """Whether tag (p, typ) may follow tag (q, prev_typ)."""
    same = prev_typ == typ
    if scheme == "iob2":
        return p != "I" or (q in ("B", "I") and same)
    if scheme == "bioes":
        inside = q in ("B", "I")
        if p in ("I", "E"):
            return inside and same
        return not inside
    if scheme == "iob1":
        return p != "B" or (q in ("B", "I") and same)
    raise ValueError(f"unknown tag scheme {scheme!r}")


class CRF(nn.Module):
    """Transition scores plus the two algorithms; emissions come from the encoder."""

    def __init__(self, num_tags: int, allowed: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None):
        super().__init__()
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))  # [from, to]
        self.start = nn.Parameter(torch.zeros(num_tags))
        self.end = nn.Parameter(torch.zeros(num_tags))
        ones = torch.ones(num_tags, dtype=torch.bool)
        start_ok, end_ok, trans_ok = allowed or (ones, ones, torch.ones(num_tags, num_tags, dtype=torch.bool))
        self.register_buffer("start_ok", start_ok, persistent=False)
        self.register_buffer("end_ok", end_ok, persistent=False)
        self.register_buffer("trans_ok", trans_ok, persistent=False)

    def _scores(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (
            self.start.masked_fill(~self.start_ok, NEG),
            self.end.masked_fill(~self.end_ok, NEG),
            self.transitions.masked_fill(~self.trans_ok, NEG),
        )

    def nll(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood per sentence, (B,). emissions (B, T, K); tags, mask (B, T); mask[:, 0] all true."""
        start, end, trans = self._scores()
        return self._log_partition(emissions, mask, start, end, trans) - self._path_score(
            emissions, tags, mask, start, end, trans
        )

    def _path_score(self, emissions, tags, mask, start, end, trans) -> torch.Tensor:
        maskf = mask.to(emissions.dtype)
        emit = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)  # (B, T)
        step = trans[tags[:, :-1], tags[:, 1:]]  # (B, T-1)
        last = tags.gather(1, (mask.sum(1) - 1).unsqueeze(1)).squeeze(1)  # (B,)
        return start[tags[:, 0]] + (emit * maskf).sum(1) + (step * maskf[:, 1:]).sum(1) + end[last]

    def _log_partition(self, emissions, mask, start, end, trans) -> torch.Tensor:
        return LogPartition.apply(emissions, mask, start, end, trans)

    def decode(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Best tag ids (B, T) by Viterbi; positions past a sentence's length hold its last tag (ignore them)."""
        start, end, trans = self._scores()
        score = start + emissions[:, 0]  # (B, K)
        backpointers = []
        for t in range(1, emissions.size(1)):
            best, idx = (score.unsqueeze(2) + trans).max(dim=1)  # (B, K): best previous tag for each tag
            backpointers.append(idx)
            score = torch.where(mask[:, t : t + 1], best + emissions[:, t], score)
        cur = (score + end).argmax(dim=1)  # (B,) tag at each sentence's last position
        out = torch.empty_like(mask, dtype=torch.long)
        for t in range(emissions.size(1) - 1, -1, -1):
            out[:, t] = cur
            if t:
                prev = backpointers[t - 1].gather(1, cur.unsqueeze(1)).squeeze(1)
                cur = torch.where(mask[:, t], prev, cur)
        return out


class LogPartition(torch.autograd.Function):
    """log Z per sentence by the forward algorithm, with a hand-written backward (forward-backward marginals).

    Why not autograd: it records ~12 small ops per time step and replays them backwards, which made the CRF a
    fifth of a training step on CPU. Each step is a matrix product in probability space, rescaled by the best
    score so far. In float32, exp() underflows past a score gap of ~87: when that leaves a tag unreachable (an
    infinite score), the batch is redone in float64 (gap ~700). The gradient of log Z is the tag marginals (for
    emissions, start and end) and the pairwise marginals (for transitions): one backward recursion gives them.
    tests/test_crf.py checks values and gradients against autograd through the plain logsumexp recursion.
    """

    @staticmethod
    def forward(ctx, emissions, mask, start, end, trans):  # noqa: D102 (B, T, K), (B, T), (K,), (K,), (K, K)
        ctx.dtypes = emissions.dtype, start.dtype
        scores = emissions.masked_fill(~mask.unsqueeze(2), 0.0), start, end, trans  # past the end: 0, never junk
        alphas, log_z = _alphas(mask, *scores)
        if not bool(torch.isfinite(alphas).all()):
            scores = tuple(x.double() for x in scores)
            alphas, log_z = _alphas(mask, *scores)
        ctx.save_for_backward(mask, *scores, alphas, log_z)
        return log_z.to(emissions.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # noqa: D102
        mask, emissions, start, end, trans, alphas, log_z = ctx.saved_tensors
        betas = _betas(mask, emissions, end, trans)
        if not bool(torch.isfinite(betas).all()):
            emissions, start, end, trans = (x.double() for x in (emissions, start, end, trans))
            alphas, log_z = _alphas(mask, emissions, start, end, trans)
            betas = _betas(mask, emissions, end, trans)
        keep = mask.unsqueeze(2)
        scale = grad.to(alphas.dtype)[:, None, None]
        unary = (alphas + betas - log_z[:, None, None]).exp() * keep * scale  # P(tag at t) (B, T, K)
        pair = (
            alphas[:, :-1].unsqueeze(3)
            + trans
            + (emissions[:, 1:] + betas[:, 1:]).unsqueeze(2)
            - log_z[:, None, None, None]
        ).exp() * (keep[:, 1:].unsqueeze(3) * scale.unsqueeze(3))  # P(tag t-1 = i, tag t = j) (B, T-1, K, K)
        last = mask.sum(1) - 1
        end_marginal = unary[torch.arange(len(last)), last]  # (B, K)
        emission_dtype, param_dtype = ctx.dtypes
        grads = unary[:, 0].sum(0), end_marginal.sum(0), pair.sum((0, 1))
        return unary.to(emission_dtype), None, *(g.to(param_dtype) for g in grads)


def _alphas(mask, emissions, start, end, trans) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward scores (B, T, K) (past a sentence's end: its last ones) and log Z (B,)."""
    steps, keep = emissions.unbind(1), mask.unsqueeze(2).unbind(1)
    top, exp_trans = _exp(trans)
    alphas = [start + steps[0]]
    for t in range(1, len(steps)):
        alpha = alphas[-1]
        shift = alpha.amax(1, keepdim=True)
        nxt = ((alpha - shift).exp() @ exp_trans).log() + (shift + top) + steps[t]  # logsumexp_i(alpha_i + trans_ij)
        alphas.append(torch.where(keep[t], nxt, alpha))
    alphas = torch.stack(alphas, dim=1)
    return alphas, torch.logsumexp(alphas[:, -1] + end, dim=1)


def _betas(mask, emissions, end, trans) -> torch.Tensor:
    """Backward scores (B, T, K): beta_t = log-score of the rest of the sentence given the tag at t."""
    steps, keep = emissions.unbind(1), mask.unsqueeze(2).unbind(1)
    top, exp_trans_t = _exp(trans.t())
    betas = [end.expand_as(steps[-1])]  # at and after each sentence's last position: the end scores
    for t in range(len(steps) - 1, 0, -1):
        after = steps[t] + betas[-1]
        shift = after.amax(1, keepdim=True)
        prev = ((after - shift).exp() @ exp_trans_t).log() + (shift + top)
        betas.append(torch.where(keep[t], prev, betas[-1]))
    return torch.stack(betas[::-1], dim=1)


def _exp(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(max, exp(scores - max)): transition scores in probability space without overflow (forbidden ones -> 0)."""
    top = scores.max()
    return top, (scores - top).exp()
