"""A linear-chain CRF in three small parts: allowed transitions, the log-likelihood, and Viterbi.

Both the forward algorithm and Viterbi loop over time steps only; every step is one batched tensor operation, so a
batch of 256 sentences costs the same Python overhead as one. Transitions that the tag scheme forbids (O -> I-PER,
B-LOC -> I-PER, ...) are masked out in training and decoding alike, so the model can never emit them.
"""

from __future__ import annotations

import torch
from torch import nn

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
        alpha = start + emissions[:, 0]  # (B, K)
        for t in range(1, emissions.size(1)):
            nxt = torch.logsumexp(alpha.unsqueeze(2) + trans, dim=1) + emissions[:, t]  # (B, K)
            alpha = torch.where(mask[:, t : t + 1], nxt, alpha)
        return torch.logsumexp(alpha + end, dim=1)

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
