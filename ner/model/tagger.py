"""The tagger: word + casing + character features -> recurrent encoder -> emissions -> CRF or softmax head.

One class, in the spirit of Flair's SequenceTagger: its constructor arguments (a `ModelConfig`, the vocabularies
and the labels) are saved beside the weights, so `load(folder)` rebuilds it without pickle or the training code.
A little past 300 lines because its small feature modules (char CNN/LSTM, the dropouts) live here with it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from ner import config
from ner.data.batching import Batch, Featurizer, FormTable
from ner.data.vocab import CASINGS
from ner.model.crf import CRF, allowed_transitions, independent
from ner.model.recurrent import run_padded

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
_CHAR_ROWS = 1024  # forms per char-encoder call at inference: small enough to stay in cache, large enough to batch


@dataclass
class ModelConfig:
    cell: str = "lstm"  # recurrent cell: lstm | gru | rnn
    bidirectional: bool = True
    num_layers: int = 1
    hidden_size: int = 200  # per direction
    head: str = "crf"  # crf | softmax
    word_dim: int = 100  # used when no pretrained vectors are given (else the vectors' size)
    case_dim: int = 10  # casing feature size; 0 disables it
    char_encoder: str = "cnn"  # cnn (Ma & Hovy 2016) | lstm (Lample et al. 2016) | none
    char_dim: int = 30  # character embedding size
    char_hidden: int = 30  # CNN filters, or LSTM hidden size per direction
    char_kernel: int = 3  # CNN window
    dropout: float = 0.5  # on the embeddings and the encoder output (and between layers)
    variational_dropout: bool = False  # one dropout mask per sentence, shared by its tokens (Gal & Ghahramani 2016)
    word_dropout: float = 0.0  # training only: probability of replacing a word id by <unk>
    context_tokens: int = 0  # read consecutive sentences of a document as one sequence of up to N tokens (0 = off)

    def __post_init__(self) -> None:
        config.choice("model.cell", self.cell, CELLS)
        config.choice("model.head", self.head, ("crf", "softmax"))
        config.choice("model.char_encoder", self.char_encoder, ("cnn", "lstm", "none"))
        for key in ("num_layers", "hidden_size", "word_dim", "char_dim", "char_hidden", "char_kernel"):
            config.at_least(f"model.{key}", getattr(self, key), 1)
        config.at_least("model.case_dim", self.case_dim, 0)
        config.at_least("model.context_tokens", self.context_tokens, 0)
        for key in ("dropout", "word_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise config.ConfigError(f"model.{key}={getattr(self, key)} must be in [0, 1)")


class CharCNN(nn.Module):
    """Characters -> one vector per word: convolution then max over positions (Ma & Hovy 2016).

    The convolution is computed as a table lookup: a character's embedding times the filters at window offset i is
    one row of a (window x characters, filters) table, built by one small matmul per batch, so each position is
    the sum of `kernel` gathered rows. That is the same function and gradient as `nn.Conv1d` (whose weights
    `conv` still holds), at under half the cost: the convolution over a batch's mostly-padding character matrix
    was a tenth of a training step. Padding positions get -1e4 from the table itself, so the max skips them.
    """

    def __init__(self, num_chars: int, dim: int, filters: int, kernel: int):
        super().__init__()
        self.embed = nn.Embedding(num_chars, dim, padding_idx=0)
        self.conv = nn.Conv1d(dim, filters, kernel)  # weights only: (filters, dim, kernel) and (filters,)
        keep = torch.ones(num_chars, 1)
        keep[0] = 0.0  # the padding character: a zero vector that gets no gradient, as padding_idx does
        penalty = torch.zeros(kernel, num_chars, 1)
        penalty[kernel // 2, 0] = -1e4  # the window's centre on a padding position
        self.register_buffer("keep", keep, persistent=False)
        self.register_buffer("penalty", penalty, persistent=False)

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        words, length = chars.shape
        weight = self.conv.weight  # (filters, dim, kernel)
        filters, kernel = weight.size(0), weight.size(2)
        table = (
            torch.matmul(self.embed.weight * self.keep, weight.permute(2, 1, 0)) + self.penalty
        )  # (kernel, chars, filters)
        left = kernel // 2
        padded = nn.functional.pad(chars, (left, kernel - 1 - left))
        rows = torch.stack([padded[:, i : i + length] + i * table.size(1) for i in range(kernel)])  # (kernel, U, L)
        x = table.view(-1, filters).index_select(0, rows.view(-1)).view(kernel, words, length, filters).sum(0)
        x = (x + self.conv.bias).max(dim=1).values  # (U, filters)
        return x.masked_fill((chars[:, :1] == 0), 0.0)  # the padding form has no characters: zeros


class CharLSTM(nn.Module):
    """Characters -> final states of a BiLSTM (Lample et al. 2016)."""

    def __init__(self, num_chars: int, dim: int, hidden: int):
        super().__init__()
        self.embed = nn.Embedding(num_chars, dim, padding_idx=0)
        self.lstm = nn.LSTM(dim, hidden, batch_first=True, bidirectional=True)

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        lengths = (chars > 0).sum(1).clamp(min=1).cpu()
        packed = pack_padded_sequence(self.embed(chars), lengths, batch_first=True, enforce_sorted=False)
        _, (h, _) = self.lstm(packed)  # h: (2, U, hidden)
        return torch.cat([h[0], h[1]], dim=1)


class TokenDropout(nn.Module):
    """Per-element dropout, as nn.Dropout, with a cheaper mask: 16 random bits per element cut from 64-bit draws,
    compared with a threshold. On CPU nn.Dropout's bernoulli_ costs about 5x more, some 6% of a training step.
    The keep probability is p rounded to 1/65536, and the scale uses that rounded value, so activations keep
    their expected value exactly."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.threshold = min(round(p * 65536), 65535)  # drop when a 16-bit draw (0..65535) is below this

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not self.threshold:
            return x
        n = x.numel()
        # from=-2**63, to=None draws all 64 bits; random_() alone leaves the sign bit at 0
        bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), None)
        keep = bits.view(torch.int16)[:n].view(x.shape) >= self.threshold - 32768  # int16 is -32768..32767
        return x * keep.to(x.dtype).mul_(65536 / (65536 - self.threshold))


class SentenceDropout(nn.Module):
    """Dropout on (B, T, D) with one mask per sentence, the same at every position: "variational" or "locked"
    dropout (Gal & Ghahramani 2016; Flair's LockedDropout). Drawing B x D random numbers instead of B x T x D makes
    it about 15x cheaper than nn.Dropout on CPU. Reimers & Gurevych 2017 found it helps BiLSTM taggers; on
    CoNLL-2003 with our default model it scored lower on dev than nn.Dropout (docs/benchmarks.md), so it is an
    option (model.variational_dropout=true), not the default."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not self.p:
            return x
        keep = x.new_empty(x.size(0), 1, x.size(2)).bernoulli_(1 - self.p)
        return x * keep.div_(1 - self.p)


class Tagger(nn.Module):
    def __init__(self, cfg: ModelConfig, featurizer: Featurizer, scheme: str, embeddings: np.ndarray | None = None):
        super().__init__()
        word_dim = embeddings.shape[1] if embeddings is not None else cfg.word_dim
        cfg = replace(cfg, word_dim=word_dim)  # saved with the weights: the vectors decide the size
        self.cfg, self.featurizer, self.scheme = cfg, featurizer, scheme
        trainable = featurizer.trainable_words or len(featurizer.words)
        self.word_embed = nn.Embedding(trainable, word_dim, padding_idx=0)
        # vectors-only words: frozen, but saved with the weights (a persistent buffer)
        if embeddings is not None:  # the frozen rows share the matrix's memory: a big vectors file is held once
            self.word_embed.weight.data.copy_(torch.from_numpy(embeddings[:trainable]))
            self.register_buffer("frozen_words", torch.from_numpy(np.ascontiguousarray(embeddings[trainable:])))
        else:
            self.register_buffer("frozen_words", torch.zeros(len(featurizer.words) - trainable, word_dim))
        self.case_embed = nn.Embedding(len(CASINGS), cfg.case_dim, padding_idx=0) if cfg.case_dim else None
        self.char_encoder, char_out = self._char_encoder(cfg, len(featurizer.chars))
        dropout = SentenceDropout if cfg.variational_dropout else TokenDropout
        self.embed_drop, self.layer_drop, self.out_drop = (dropout(cfg.dropout) for _ in range(3))
        self.rnn = CELLS[cfg.cell](
            word_dim + cfg.case_dim + char_out,
            cfg.hidden_size,
            num_layers=cfg.num_layers,
            batch_first=True,
            bidirectional=cfg.bidirectional,
        )
        labels = featurizer.labels.itos
        self.proj = nn.Linear(cfg.hidden_size * (2 if cfg.bidirectional else 1), len(labels))
        self.crf = CRF(len(labels), allowed_transitions(scheme, labels)) if cfg.head == "crf" else None
        self.temperature = 1.0  # fitted on dev after training (ner/evaluation/calibration.py); saved with the model
        self._low_precision: tuple | None = None  # (weights' identity, bf16 copies of the RNN weights), inference only

    @staticmethod
    def _char_encoder(cfg: ModelConfig, num_chars: int) -> tuple[nn.Module | None, int]:
        if cfg.char_encoder == "cnn":
            return CharCNN(num_chars, cfg.char_dim, cfg.char_hidden, cfg.char_kernel), cfg.char_hidden
        if cfg.char_encoder == "lstm":
            return CharLSTM(num_chars, cfg.char_dim, cfg.char_hidden), 2 * cfg.char_hidden
        return None, 0

    def lookup_words(self, words: torch.Tensor) -> torch.Tensor:
        """Word vectors (B, T, word_dim): trainable rows first, frozen vectors-only rows after them."""
        trainable = self.word_embed.num_embeddings
        if not len(self.frozen_words):
            return self.word_embed(words)
        frozen = words >= trainable
        vecs = self.word_embed(words.masked_fill(frozen, 0))
        return torch.where(frozen.unsqueeze(2), self.frozen_words[(words - trainable).clamp(min=0)], vecs)

    def embed(self, batch: Batch) -> torch.Tensor:
        """Token features (B, T, D): word vector, casing vector and character vector side by side."""
        words = batch.words
        if self.training and self.cfg.word_dropout:
            drop = torch.rand(words.shape, device=words.device) < self.cfg.word_dropout
            words = words.masked_fill(drop & batch.mask, 1)
        parts = [self.lookup_words(words)]
        if self.case_embed is not None:
            parts.append(self.case_embed(batch.cases))
        if self.char_encoder is not None:
            parts.append(self.char_encoder(batch.chars)[batch.char_index])  # (B, T, char_out)
        return torch.cat(parts, dim=2)

    def form_features(self, forms: FormTable, device: torch.device | str = "cpu") -> torch.Tensor:
        """Token features (F, D) of each distinct form, as `embed` builds them per token: what the inference
        engine gathers its batches from, so each form is featurised once however often it occurs."""
        parts = [self.lookup_words(forms.words.to(device)[None])[0]]
        if self.case_embed is not None:
            parts.append(self.case_embed(forms.cases.to(device)))
        if self.char_encoder is not None:
            parts.append(self._char_vectors(forms.chars, forms.char_lens, device))
        return torch.cat(parts, dim=1)

    def _char_vectors(self, chars: torch.Tensor, lens: torch.Tensor, device: torch.device | str) -> torch.Tensor:
        """Char-encoder output per form, run on forms of similar length together.

        Each call gets only as many character positions as its longest form needs, instead of the longest of all
        (often 40), which makes this about 3x faster; padding positions do not change the result.
        """
        order = torch.argsort(lens, stable=True)
        out = None
        for i in range(0, len(order), _CHAR_ROWS):
            rows = order[i : i + _CHAR_ROWS]
            width = max(1, int(lens[rows].max()))
            vectors = self.char_encoder(chars[rows, :width].to(device))
            if out is None:
                out = vectors.new_empty(len(order), vectors.size(1))
            out[rows.to(device)] = vectors
        return out

    def score(self, x: torch.Tensor, lengths: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Tag scores (B, T, K) from token features (B, T, D). The recurrent encoder runs padded, one direction
        at a time (ner/model/recurrent.py: why), in `dtype`: float32 on the weights themselves, bfloat16 on a
        copy of them (inference only; remade whenever the weights have changed)."""
        return self.proj(self.out_drop(self.encode(x, lengths, dtype)).float())

    def encode(self, x: torch.Tensor, lengths: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The recurrent states (B, T, directions * hidden) of the top layer, forward direction first, before the
        output dropout: what the tag scores are read from, and what a language-model objective in training
        (ner/training/objectives.py) reads as well."""
        weights = None if dtype == torch.float32 else self._rnn_weights(dtype)
        return run_padded(self.rnn, self.embed_drop(x).to(dtype), lengths, weights, between_layers=self.layer_drop)

    def _rnn_weights(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        params = dict(self.rnn.named_parameters())
        key = (dtype, tuple((p.data_ptr(), p._version) for p in params.values()))
        if self._low_precision is None or self._low_precision[0] != key:
            self._low_precision = (key, {name: p.detach().to(dtype) for name, p in params.items()})
        return self._low_precision[1]

    def emissions(self, batch: Batch, features: torch.Tensor | None = None) -> torch.Tensor:
        """Tag scores (B, T, K). `features` lets a caller pass embeddings it wants gradients for."""
        return self.score(self.embed(batch) if features is None else features, batch.lengths)

    @property
    def chain(self) -> CRF:
        """The sequence model that span scores and the temperature come from: the CRF, or for a softmax head an
        unconstrained CRF with zero transitions (the same distribution as the per-token softmax)."""
        return self.crf if self.crf is not None else independent(self.proj.out_features).to(self.proj.weight.device)

    def best_ids(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Best tag ids (B, T): Viterbi under the constrained transitions, or the argmax for a softmax head."""
        return self.crf.decode(emissions, mask) if self.crf is not None else emissions.argmax(2)

    def loss(
        self,
        batch: Batch,
        emissions: torch.Tensor | None = None,
        targets: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Mean negative log-likelihood per sentence (CRF) or per-token cross-entropy summed per sentence, of the
        gold tags, or with `targets` (unary (B, T, K), pairs (B, K, K) marginals: `CRF.soft_nll`) of a
        distribution over tag sequences, such as a mix of the gold tags and teachers' marginals (distillation)."""
        emissions = self.emissions(batch) if emissions is None else emissions
        if targets is not None:
            unary, pairs = targets
            if self.crf is not None:
                return self.crf.soft_nll(emissions, batch.mask, unary, pairs).mean()
            ce = -(unary * emissions.log_softmax(2)).sum(2)  # (B, T); unary is 0 past each sentence's end
            return ce.sum() / batch.mask.size(0)
        if self.crf is not None:
            return self.crf.nll(emissions, batch.tags, batch.mask).mean()
        ce = nn.functional.cross_entropy(emissions.transpose(1, 2), batch.tags, reduction="none")  # (B, T)
        return (ce * batch.mask).sum() / batch.mask.size(0)

    @torch.inference_mode()
    def decode(self, batch: Batch) -> list[list[int]]:
        """Best tag ids per sentence, unpadded: the plain reference that `ner.model.engine` is tested against."""
        best = self.best_ids(self.emissions(batch), batch.mask)
        return [row[:n] for row, n in zip(best.tolist(), batch.lengths.tolist(), strict=True)]

    def save(self, folder: str | Path) -> None:
        """weights.pt (a plain state_dict) + tagger.json (config, scheme, vocabularies): no pickle anywhere."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.state_dict(), folder / "weights.pt")
        meta = {
            "format": 1,
            "model": asdict(self.cfg),
            "scheme": self.scheme,
            "vocab": self.featurizer.to_json(),
            "temperature": self.temperature,
        }
        (folder / "tagger.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu") -> Tagger:
        """Rebuild a saved tagger, in eval mode; weights are read with weights_only=True, so a pickled object is
        refused. The word-vector size is read off the saved embedding matrix: a model trained with pretrained
        vectors has their size, whatever `model.word_dim` said (saved configs before the size was recorded)."""
        folder = Path(folder)
        meta = json.loads((folder / "tagger.json").read_text(encoding="utf-8"))
        state = torch.load(folder / "weights.pt", map_location=device, weights_only=True)
        cfg = dict(meta["model"])
        if "word_embed.weight" in state:
            cfg["word_dim"] = int(state["word_embed.weight"].shape[1])
        model = cls(ModelConfig(**cfg), Featurizer.from_json(meta["vocab"]), meta["scheme"])
        model.load_state_dict(state)
        model.temperature = float(meta.get("temperature", 1.0))  # models saved before calibration existed: 1
        return model.to(device).eval()
