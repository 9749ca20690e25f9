"""Several trained taggers averaged into one (log-linear pooling), decoded by the same engine as a single model.

The members' emission scores and CRF parameters are averaged and the Viterbi path of the averages is taken: one
decode, under the same transition constraints. It answers how far averaging goes (`python -m benchmarks.ensemble`),
which bounds what one model of the architecture can reach.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ner.data.batching import FormTable
from ner.model.tagger import Tagger


class Averaged(nn.Module):
    """Members that share vocabularies, labels, scheme and context setting, read by `Engine` as one `Tagger`."""

    best_ids = Tagger.best_ids

    def __init__(self, members: list[Tagger]):
        super().__init__()
        first = members[0]
        for m in members[1:]:
            if m.featurizer.to_json() != first.featurizer.to_json() or (m.scheme, m.cfg.context_tokens) != (
                first.scheme,
                first.cfg.context_tokens,
            ):
                raise ValueError("models with other vocabularies, labels, scheme or context cannot be averaged")
        self.members = nn.ModuleList(members)
        self.cfg, self.featurizer, self.scheme = first.cfg, first.featurizer, first.scheme
        self.crf = copy.deepcopy(first.crf)
        if self.crf is not None:
            with torch.no_grad():
                for name, param in self.crf.named_parameters():
                    param.copy_(torch.stack([m.crf.get_parameter(name) for m in members]).mean(0))

    @property
    def chain(self):
        """The averaged CRF (or for softmax members the unconstrained chain of `Tagger.chain`): what span scores
        and a student's distillation targets (`ner.training.objectives`) are computed with."""
        return self.crf if self.crf is not None else self.members[0].chain

    def form_features(self, forms: FormTable, device: torch.device | str = "cpu") -> torch.Tensor:
        """Every member's features of each form, side by side (F, sum of D)."""
        return torch.cat([m.form_features(forms, device) for m in self.members], dim=1)

    def score(self, x: torch.Tensor, lengths: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The mean of the members' tag scores, each member reading its own slice of the features."""
        widths = [m.rnn.input_size for m in self.members]
        parts = torch.split(x, widths, dim=2)
        return torch.stack([m.score(p, lengths, dtype) for m, p in zip(self.members, parts, strict=True)]).mean(0)
