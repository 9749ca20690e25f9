"""A linear-chain CRF in three small parts: allowed transitions, the log-likelihood, and Viterbi.

Both the forward algorithm and Viterbi loop over time steps only; every step is one batched tensor operation, so a
batch of 256 sentences costs the same Python overhead as one. Transitions that the tag scheme forbids (O -> I-PER,
B-LOC -> I-PER, ...) are masked out in training and decoding alike, so the model can never emit them.

A little past 300 lines: the log-likelihood's hand-written gradient, the span scores and the distillation targets
are all read off one scaled forward-backward (`_Forward`), so they live beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from ner.data.schemes import split_tag

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

    def nll(
        self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0
    ) -> torch.Tensor:
        """Negative log-likelihood per sentence, (B,). emissions (B, T, K); tags, mask (B, T); mask[:, 0] all true."""
        start, end, trans = self._scores()
        if temperature != 1.0:  # calibration (ner/evaluation/calibration.py): every score divided by it
            emissions, start, end, trans = (x / temperature for x in (emissions, start, end, trans))
        return self._log_partition(emissions, mask, start, end, trans) - self._path_score(
            emissions, tags, mask, start, end, trans
        )

    def soft_nll(self, emissions: torch.Tensor, mask: torch.Tensor, unary: torch.Tensor, pairs: torch.Tensor):
        """-E_q[log p(y | x)] per sentence, (B,), for a distribution q over whole tag sequences given by its
        marginals: `unary` (B, T, K), P_q(tag k at position t), and `pairs` (B, K, K), the expected number of
        i -> j transitions in the sentence. The expected path score is linear in those, so this costs one forward
        pass, as `nll` does, which is its case of q = the gold path (one-hot tags, transition counts). With q a
        teacher CRF's marginals (`marginals`) it is the cross-entropy to the teacher's whole sequence distribution:
        structure-level knowledge distillation (Wang et al. 2020), which per-token targets would only approximate.
        """
        start, end, trans = self._scores()
        keep = mask.unsqueeze(2).to(emissions.dtype)
        last = mask.sum(1) - 1
        rows = torch.arange(mask.size(0), device=mask.device)
        expected = (
            (unary * emissions * keep).sum((1, 2))
            + unary[:, 0] @ start
            + unary[rows, last] @ end
            + (pairs * trans).sum((1, 2))
        )
        return self._log_partition(emissions, mask, start, end, trans) - expected

    @torch.no_grad()
    def marginals(
        self, emissions: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(unary (B, T, K), pairs (B, K, K)): P(tag k at t), 0 past a sentence's end, and the expected count of
        each transition per sentence, by the scaled forward-backward of `LogPartition` (float64 where float32
        under- or overflows): the targets a student learns in distillation (`soft_nll`). With `temperature` > 1
        every score is divided by it first: a softer distribution, as a teacher is on sentences it never saw."""
        scores = emissions.float().masked_fill(~mask.unsqueeze(2), 0.0), *self._scores()
        if temperature != 1.0:
            scores = tuple(x / temperature for x in scores)
        forward, betas = _forward_backward(mask, scores)
        keep = mask.unsqueeze(2).to(betas.dtype)
        unary = forward.alphas * betas * keep
        after = forward.probs[:, 1:] * betas[:, 1:] / forward.norms[:, 1:, None] * keep[:, 1:]  # (B, T-1, K)
        pairs = forward.exp_trans * torch.bmm(forward.alphas[:, :-1].transpose(1, 2), after)
        return unary.float(), pairs.float()

    @torch.no_grad()
    def span_probs(
        self, emissions: torch.Tensor, mask: torch.Tensor, spans: Spans, temperature: float = 1.0
    ) -> torch.Tensor:
        """P(the tags of each span are exactly `spans.tags`, and the tag after it is not `spans.stop_before`) under
        this CRF with every score divided by `temperature`: a span's marginal, by forward-backward over the whole
        sentence (not a product of per-token maxima). With zero transitions and no constraints (`independent`)
        this is the product of the per-token softmax probabilities, which is what a softmax head gives.

        emissions (B, T, K), mask (B, T); returns (N,) probabilities in [0, 1], one per span.
        """
        start, end, trans = (x / temperature for x in self._scores())
        scores = emissions.float().masked_fill(~mask.unsqueeze(2), 0.0) / temperature, start, end, trans
        forward, betas = _forward_backward(mask, scores)
        return _span_probs(forward, betas, spans).clamp(0.0, 1.0).float()

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


def independent(num_tags: int) -> CRF:
    """A CRF with zero transitions and nothing forbidden: its distribution is the per-token softmax, so a softmax
    head's span probabilities and temperature come from the same code as the CRF's."""
    return CRF(num_tags).requires_grad_(False)


@dataclass
class Spans:
    """N spans to score, as the model's own tags: `row` of the batch, first position `start`, `tags` (N, L) padded
    with -1 past each span's length, and the tag the next position must not have (`stop_before`, -1 for none: in
    IOB2 an I- of the same type would make the entity longer; in BIOES the E-/S- tag already ends it)."""

    row: torch.Tensor  # (N,) long
    start: torch.Tensor  # (N,) long
    tags: torch.Tensor  # (N, L) long, -1 = past the span
    stop_before: torch.Tensor  # (N,) long, -1 = none


def _span_probs(f: _Forward, betas: torch.Tensor, spans: Spans) -> torch.Tensor:
    """alpha(first tag) x the chain of scaled steps inside the span x beta(last tag), in the scaled space of
    `_Forward`, where alphas * betas are the tag marginals; every factor is a probability-space number."""
    n, width = spans.tags.shape
    if not n:
        return betas.new_zeros(0)
    steps = torch.arange(width, device=spans.tags.device)
    inside = spans.tags >= 0
    length = inside.sum(1)
    pos = (spans.start[:, None] + steps).clamp(max=f.alphas.size(1) - 1)
    rows = spans.row[:, None].expand(-1, width)
    tags = spans.tags.clamp(min=0)
    prob = f.alphas[spans.row, spans.start, tags[:, 0]]
    if width > 1:
        step = f.exp_trans[tags[:, :-1], tags[:, 1:]] * f.probs[rows[:, 1:], pos[:, 1:], tags[:, 1:]]
        step = step / f.norms[rows[:, 1:], pos[:, 1:]]
        prob = prob * torch.where(inside[:, 1:], step, torch.ones_like(step)).prod(1)
    last = length - 1
    last_pos, last_tag = spans.start + last, tags[torch.arange(n), last]
    beta = betas[spans.row, last_pos, last_tag]
    nxt = last_pos + 1
    has_next = (spans.stop_before >= 0) & (nxt < f.lengths[spans.row])
    if bool(has_next.any()):
        r, p, t = spans.row[has_next], nxt[has_next], last_tag[has_next]
        into = f.exp_trans[t] * f.probs[r, p] * betas[r, p] / f.norms[r, p, None]  # (M, K): each next tag's share
        into[torch.arange(len(r)), spans.stop_before[has_next]] = 0.0
        beta = beta.clone()
        beta[has_next] = into.sum(1)
    return prob * beta


class LogPartition(torch.autograd.Function):
    """log Z per sentence by the forward algorithm, with a hand-written backward (forward-backward marginals).

    Why not autograd: it records ~12 small ops per time step and replays them backwards, which made the CRF a
    fifth of a training step on CPU. Both recursions run in probability space with a normaliser per step (the
    scaled forward-backward of HMMs, Rabiner 1989): scores are exponentiated once, outside the loop, and each step
    is a matrix product, a product, a sum and a division; the normalisers' logs add up to log Z. In float32,
    exp() underflows past a score gap of ~87: when a step's total mass comes out that small, or the backward
    vectors overflow, the batch is redone in float64 (gap ~700). The gradients are the tag marginals (for
    emissions, start and end) and the pairwise marginals (for transitions), products of the two recursions'
    vectors. tests/test_crf.py checks values and gradients against autograd through the logsumexp recursion.
    """

    @staticmethod
    def forward(ctx, emissions, mask, start, end, trans):  # noqa: D102 (B, T, K), (B, T), (K,), (K,), (K, K)
        ctx.dtypes = emissions.dtype, start.dtype
        scores = emissions.masked_fill(~mask.unsqueeze(2), 0.0), start, end, trans  # past the end: 0, never junk
        forward = _Forward(mask, *scores)
        if not forward.ok:
            forward = _Forward(mask, *(x.double() for x in scores))
        ctx.forward = forward
        return forward.log_z.to(emissions.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # noqa: D102
        f = ctx.forward
        del ctx.forward
        betas = f.betas()
        if not bool(torch.isfinite(betas).all()):  # a tag the words rule out, whose future is likely: overflow
            f = _Forward(f.mask, *(x.double() for x in f.scores))
            betas = f.betas()
        keep = f.mask.unsqueeze(2).to(betas.dtype)
        scale = grad.to(betas.dtype)[:, None, None]
        unary = f.alphas * betas * keep * scale  # P(tag at t) (B, T, K)
        after = (f.probs[:, 1:] * betas[:, 1:] / f.norms[:, 1:, None]) * keep[:, 1:] * scale  # (B, T-1, K)
        k = f.alphas.size(2)
        pair = f.exp_trans * (f.alphas[:, :-1].reshape(-1, k).t() @ after.reshape(-1, k))  # sum of P(i at t-1, j at t)
        last = f.lengths - 1
        end_marginal = unary[torch.arange(len(last)), last]  # (B, K)
        emission_dtype, param_dtype = ctx.dtypes
        grads = unary[:, 0].sum(0), end_marginal.sum(0), pair
        return unary.to(emission_dtype), None, *(g.to(param_dtype) for g in grads)


class _Forward:
    """The forward pass in probability space, and what the backward pass needs from it.

    alphas (B, T, K): P(tag at t | words up to t), held past a sentence's end; norms (B, T): each step's mass
    before normalising (1 past the end); probs: exp(emissions - their max at each position).
    """

    def __init__(self, mask, emissions, start, end, trans):
        self.mask, self.scores = mask, (emissions, start, end, trans)
        self.top, self.exp_trans = _exp(trans)
        shift = emissions.amax(2, keepdim=True)
        self.probs = (emissions - shift).exp()
        start_top, exp_start = _exp(start)
        end_top, self.exp_end = _exp(end)
        steps, keep = self.probs.unbind(1), mask.unsqueeze(2).unbind(1)
        self.lengths = mask.sum(1)
        self.shortest = int(self.lengths.min())  # before this position no sentence has ended: no torch.where
        mass = exp_start * steps[0]
        norm = mass.sum(1, keepdim=True)
        alpha = mass / norm
        alphas, norms = [alpha], [norm]
        for t in range(1, len(steps)):
            mass = (alpha @ self.exp_trans) * steps[t]
            norm = mass.sum(1, keepdim=True)
            alpha = mass / norm if t < self.shortest else torch.where(keep[t], mass / norm, alpha)
            alphas.append(alpha)
            norms.append(norm)
        self.alphas = torch.stack(alphas, dim=1)
        self.norms = torch.cat(norms, dim=1).masked_fill(~mask, 1.0)
        self.final = (alpha * self.exp_end).sum(1)  # (B,): the end scores' share
        self.log_z = (
            (self.norms.log() + shift.squeeze(2) * mask).sum(1)
            + (self.lengths - 1) * self.top
            + start_top
            + end_top
            + self.final.log()
        )
        tiny = torch.finfo(emissions.dtype).tiny * 1e6  # well above the denormals, where precision is lost
        self.ok = (
            bool(torch.isfinite(self.log_z).all()) and float(torch.minimum(self.norms.min(), self.final.min())) > tiny
        )

    def betas(self) -> torch.Tensor:
        """(B, T, K), scaled so that alphas * betas sums to 1 over tags at every real position: the marginals."""
        steps, keep = self.probs.unbind(1), self.mask.unsqueeze(2).unbind(1)
        last = self.exp_end / self.final.unsqueeze(1)  # at and after each sentence's last position
        exp_trans_t = self.exp_trans.t()
        betas = [last]
        for t in range(len(steps) - 1, 0, -1):
            prev = ((steps[t] * betas[-1]) @ exp_trans_t) / self.norms[:, t : t + 1]
            betas.append(prev if t < self.shortest else torch.where(keep[t], prev, last))
        return torch.stack(betas[::-1], dim=1)


def _forward_backward(mask: torch.Tensor, scores: tuple) -> tuple[_Forward, torch.Tensor]:
    """Both recursions of the scaled forward-backward, redone in float64 where float32 under- or overflows."""
    forward = _Forward(mask, *scores)
    betas = forward.betas() if forward.ok else None
    if betas is None or not bool(torch.isfinite(betas).all()):
        forward = _Forward(mask, *(x.double() for x in scores))
        betas = forward.betas()
    return forward, betas


def _exp(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(max, exp(scores - max)): scores in probability space without overflow (forbidden ones -> 0)."""
    top = scores.max()
    return top, (scores - top).exp()
