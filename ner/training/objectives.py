"""What training minimises: the gold tags' negative log-likelihood, optionally mixed with teachers' marginals
(distillation) and joined by a language-model loss (co-training). Both extras cost training time only.

The two extras are the levers of docs/benchmarks.md's accuracy section past the 50-d ceiling:
- Distillation: an ensemble of trained taggers (`ner.model.ensemble.Averaged`, log-linear pooling) is itself a
  linear-chain CRF; its unary and pairwise marginals on every training sentence are computed once, before the
  first epoch, and the student minimises the cross-entropy to the mix (1 - w) gold + w teachers (`CRF.soft_nll`),
  one forward pass per batch as with the gold tags alone.
- Language-model co-training (Rei 2017; Liu et al. 2018 do it with characters): the forward recurrent state at a
  word also predicts the next word, the backward one the previous word, through an adaptive softmax (Grave et al.
  2017) over the most frequent training words. Its weights live here, not in the tagger: they are optimised and
  checkpointed with the run, never saved with the model, so tagging reads exactly the tagger it read before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ner import config
from ner.data.batching import Batch, Encoded
from ner.data.corpus import Sentences
from ner.model.engine import Engine
from ner.model.ensemble import Averaged
from ner.model.tagger import Tagger
from ner.tracking import model_uri

if TYPE_CHECKING:
    from ner.training.trainer import TrainerConfig


@dataclass
class TeacherTargets:
    """The teachers' marginals on each training sentence, in the student's label order."""

    unary: torch.Tensor  # (tokens, K): P(tag k) at every token of every sentence, sentence after sentence
    pairs: torch.Tensor  # (sentences, K, K): expected count of each transition in the sentence
    offsets: np.ndarray  # (sentences + 1,): where each sentence's rows of `unary` start

    def batch(self, index: Sequence[int], steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(unary (B, steps, K), 0 past each sentence's end; pairs (B, K, K)) of the sentences `index`."""
        unary = self.unary.new_zeros(len(index), steps, self.unary.size(1))
        for row, i in enumerate(index):
            start, stop = self.offsets[i], self.offsets[i + 1]
            unary[row, : stop - start] = self.unary[start:stop]
        return unary, self.pairs[list(index)]


def teacher_targets(
    teacher, sentences: Sequence[list[str]], labels: list[str], batch_size: int = 512, temperature: float = 1.0
):
    """Marginals of `teacher` (a `Tagger` or an `Averaged` ensemble of them) on `sentences` at `temperature`,
    reordered to `labels`, the student's tags; a `ValueError` when the two tag sets differ."""
    own = teacher.featurizer.labels.itos
    if sorted(own) != sorted(labels):
        raise ValueError(f"the teachers' tags {own} are not the student's {labels} (same data.train_scheme?)")
    order = torch.tensor([own.index(t) for t in labels])  # student tag j = teacher tag order[j]
    lengths = np.fromiter(map(len, sentences), dtype=np.int64, count=len(sentences))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    sentence_of = np.repeat(np.arange(len(sentences)), lengths)
    k = len(labels)
    unary, pairs = torch.zeros(int(offsets[-1]), k), torch.zeros(len(sentences), k, k)
    chain = teacher.chain
    for positions, emissions, mask in Engine(teacher, batch_size=batch_size).emissions(sentences):
        u, p = chain.marginals(emissions, mask, temperature)
        firsts = np.concatenate([[0], np.cumsum(mask.sum(1).numpy())[:-1]])
        unary[torch.from_numpy(positions)] = u[mask][:, order]
        pairs[torch.from_numpy(sentence_of[positions[firsts]])] = p[:, order][:, :, order]
    return TeacherTargets(unary, pairs, offsets)


def gold_targets(tags: torch.Tensor, mask: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The gold path as marginals: one-hot tags (B, T, K), 0 past the end, and transition counts (B, K, K)."""
    onehot = nn.functional.one_hot(tags, k).float() * mask.unsqueeze(2)
    return onehot, torch.bmm(onehot[:, :-1].transpose(1, 2), onehot[:, 1:])


class LanguageModel(nn.Module):
    """Next word from the forward state, previous word from the backward one, over the `vocab` most frequent
    training words; other words are one class, sentence boundaries another (both kept: they are frequent)."""

    BOUNDARY, OTHER = 0, 1

    def __init__(self, hidden: int, directions: int, word_ids: torch.Tensor, vocab: int):
        super().__init__()
        counts = torch.bincount(word_ids[word_ids > 0])
        frequent = torch.argsort(counts, descending=True, stable=True)[: min(vocab, int((counts > 0).sum()))]
        classes = torch.full((len(counts),), self.OTHER, dtype=torch.long)
        classes[frequent] = torch.arange(2, 2 + len(frequent))
        self.register_buffer("classes", classes, persistent=False)  # word id -> LM class (by frequency)
        self.hidden, self.directions, n = hidden, directions, 2 + len(frequent)
        cutoffs = [c for c in (100, 1000) if c < n - 1] or [max(1, n // 2)]  # the frequent classes cost least
        self.heads = nn.ModuleList(
            nn.AdaptiveLogSoftmaxWithLoss(hidden, n, cutoffs, div_value=4.0) for _ in range(directions)
        )

    def _classes(self, words: torch.Tensor) -> torch.Tensor:
        return self.classes[words.clamp(max=len(self.classes) - 1)].masked_fill(words >= len(self.classes), 1)

    def forward(self, states: torch.Tensor, words: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of the neighbouring words, summed per sentence, mean over the batch."""
        target = self._classes(words).masked_fill(~mask, self.BOUNDARY)  # past the end: the boundary
        boundary = target.new_full((target.size(0), 1), self.BOUNDARY)
        nexts = torch.cat([target[:, 1:], boundary], dim=1)  # what follows each position (the end: boundary)
        prevs = torch.cat([boundary, target[:, :-1]], dim=1)
        total = states.new_zeros(())
        for d, (head, want) in enumerate(zip(self.heads, (nexts, prevs), strict=False)):
            h = states[..., d * self.hidden : (d + 1) * self.hidden][mask]
            total = total + head(h, want[mask]).loss * len(h)
        return total / mask.size(0)


class Objective(nn.Module):
    """The training loss of one batch. With neither extra it is exactly `Tagger.loss` of the gold tags."""

    def __init__(
        self,
        model: Tagger,
        teachers: TeacherTargets | None = None,
        teacher_weight: float = 0.0,
        lm: LanguageModel | None = None,
        lm_weight: float = 0.0,
    ):
        super().__init__()
        self.model, self.teachers, self.teacher_weight = model, teachers, teacher_weight
        self.lm, self.lm_weight = lm, lm_weight

    def trainable(self) -> list[nn.Parameter]:
        """The tagger's parameters, then the training-only ones (the language model's)."""
        return [*self.model.parameters(), *(self.lm.parameters() if self.lm is not None else ())]

    def extra_state(self) -> dict | None:
        return self.lm.state_dict() if self.lm is not None else None

    def load_extra_state(self, state: dict | None) -> None:
        if self.lm is not None and state is not None:
            self.lm.load_state_dict(state)

    def forward(self, batch: Batch) -> torch.Tensor:
        model = self.model
        if self.teachers is None and self.lm is None:
            return model.loss(batch)
        states = model.encode(model.embed(batch), batch.lengths)
        dropped = model.out_drop(states)
        emissions = model.proj(dropped)
        targets = None
        if self.teachers is not None:
            gold = gold_targets(batch.tags, batch.mask, emissions.size(2))
            soft = self.teachers.batch(batch.index, emissions.size(1))
            w = self.teacher_weight
            targets = tuple((1 - w) * g + w * s.to(g.device) for g, s in zip(gold, soft, strict=True))
        loss = model.loss(batch, emissions, targets)
        if self.lm is not None:
            loss = loss + self.lm_weight * self.lm(dropped, batch.words, batch.mask)
        return loss


def language_model(model: Tagger, train: Encoded, vocab: int) -> LanguageModel:
    """An LM head for `model`'s top recurrent layer over the `vocab` most frequent words of `train`."""
    word_ids = train.form_word[torch.tensor([f for sent in train.forms for f in sent])]
    directions = 2 if model.cfg.bidirectional else 1
    return LanguageModel(model.cfg.hidden_size, directions, word_ids, vocab)


def build(
    cfg: TrainerConfig, tracking_uri: str | None, model: Tagger, train: Sentences, train_enc: Encoded
) -> Objective:
    """The training loss: the gold tags, plus the teachers' marginals and a language model where configured."""
    teachers = None
    if cfg.teachers:
        if model.cfg.context_tokens:
            raise config.ConfigError("trainer.teachers: distillation reads sentences alone: set model.context_tokens=0")
        members = []
        for i, uri in enumerate(cfg.teachers):
            try:
                members.append(model_uri.load(uri, tracking_uri))
            except model_uri.ModelError as err:
                raise config.ConfigError(f"trainer.teachers[{i}]={uri!r}: {err}") from None
        try:
            teacher = Averaged(members)
            labels = model.featurizer.labels.itos
            teachers = teacher_targets(teacher, train.tokens, labels, cfg.eval_batch_size, cfg.teacher_temperature)
        except ValueError as err:
            raise config.ConfigError(f"trainer.teachers: {err}") from None
        print(
            f"distilling {len(members)} teachers' marginals "
            f"(weight {cfg.teacher_weight}, temperature {cfg.teacher_temperature})",
            flush=True,
        )
    lm = language_model(model, train_enc, cfg.lm_vocab) if cfg.lm_weight else None
    return Objective(model, teachers, cfg.teacher_weight, lm, cfg.lm_weight)
