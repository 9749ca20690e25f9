import pytest
import torch

from ner.data import schemes
from ner.data.batching import Featurizer, bucketed
from ner.data.vocab import Vocab, casing
from ner.model.tagger import CharCNN, ModelConfig, Tagger

SENTS = [["EU", "rejects", "German", "call"], ["Peter", "Blackburn"], ["BRUSSELS", "1996-08-22"], ["Hi"]]
TAGS = [["S-ORG", "O", "S-MISC", "O"], ["B-PER", "E-PER"], ["S-LOC", "O"], ["O"]]


def make(**overrides) -> Tagger:
    torch.manual_seed(0)
    labels = Vocab(schemes.labels_for(["LOC", "MISC", "ORG", "PER"], "bioes"))
    words = Vocab.build(w.lower() for s in SENTS for w in s)
    feat = Featurizer(words, Vocab.build(c for s in SENTS for w in s for c in w), labels)
    cfg = ModelConfig(hidden_size=8, char_hidden=4, char_dim=4, word_dim=6, **overrides)
    return Tagger(cfg, feat, "bioes")


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("char_encoder", ["cnn", "lstm", "none"])
def test_emissions_have_one_score_per_token_and_label(cell, bidirectional, char_encoder):
    model = make(cell=cell, bidirectional=bidirectional, char_encoder=char_encoder)
    enc = model.featurizer.encode(SENTS, TAGS)
    batch = enc.batch([0, 1, 2, 3])
    assert model.emissions(batch).shape == (4, 4, len(model.featurizer.labels))
    assert torch.isfinite(model.loss(batch))


@pytest.mark.parametrize("kernel", [3, 4, 5])
def test_char_cnn_equals_a_zero_padded_conv1d_in_values_and_gradients(kernel):
    torch.manual_seed(kernel)
    cnn = CharCNN(num_chars=20, dim=6, filters=5, kernel=kernel)
    chars = torch.randint(1, 20, (12, 9))
    for row, n in enumerate([0, 1, 2, 9, 4, 5, 6, 7, 8, 3, 1, 9]):
        chars[row, n:] = 0  # row 0: the padding form
    conv = torch.nn.Conv1d(6, 5, kernel, padding=kernel // 2)
    conv.weight, conv.bias = cnn.conv.weight, cnn.conv.bias
    x = conv(cnn.embed(chars).transpose(1, 2))[:, :, : chars.size(1)]
    expected = x.masked_fill((chars == 0).unsqueeze(1), -1e4).max(dim=2).values.masked_fill(chars[:, :1] == 0, 0.0)
    got = cnn(chars)
    torch.testing.assert_close(got, expected)
    assert not got[0].any()
    weights = [cnn.embed.weight, cnn.conv.weight, cnn.conv.bias]
    upstream = torch.randn_like(got)
    got_grads = torch.autograd.grad((got * upstream).sum(), weights)
    expected_grads = torch.autograd.grad((expected * upstream).sum(), weights)
    for a, b in zip(got_grads, expected_grads, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("head", ["crf", "softmax"])
def test_padding_does_not_change_a_sentence_s_tags_or_loss(head):
    model = make(head=head).eval()
    enc = model.featurizer.encode(SENTS, TAGS)
    together = model.decode(enc.batch([0, 1, 2, 3]))
    alone = [model.decode(enc.batch([i]))[0] for i in range(4)]
    assert together == alone
    with torch.no_grad():
        batch_loss = model.loss(enc.batch([0, 1])) * 2
        single = model.loss(enc.batch([0])) + model.loss(enc.batch([1]))
    assert torch.allclose(batch_loss, single, atol=1e-4)


def test_decoded_tags_stay_in_the_label_set_and_are_valid_bioes():
    model = make()
    enc = model.featurizer.encode(SENTS, TAGS)
    for seq in model.decode(enc.batch([0, 1, 2, 3])):
        tags = [model.featurizer.labels.itos[i] for i in seq]
        assert schemes.is_valid(tags, "bioes")


def test_save_and_load_give_identical_predictions(tmp_path):
    model = make().eval()
    model.save(tmp_path / "m")
    loaded = Tagger.load(tmp_path / "m")
    enc = model.featurizer.encode(SENTS)
    assert loaded.decode(enc.batch([0, 1, 2])) == model.decode(enc.batch([0, 1, 2]))


def test_a_checkpoint_carrying_a_pickled_object_is_refused(tmp_path):
    make().save(tmp_path / "m")
    torch.save({"evil": Exception("pickled object")}, tmp_path / "m" / "weights.pt")
    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported global"):
        Tagger.load(tmp_path / "m")


def test_bad_model_config_names_the_key():
    with pytest.raises(ValueError, match="model.cell='transformer'"):
        ModelConfig(cell="transformer")


def test_casing_classes():
    assert [casing(w) for w in ["1996", "12.5%", "the", "EU", "Peter", "mRNA1", "-"]] == [1, 2, 3, 4, 5, 6, 7]


def test_buckets_cover_every_sentence_once_and_respect_the_token_cap():
    lengths = [5, 1, 9, 9, 3, 200, 2, 9]
    batches = bucketed(lengths, batch_size=3, max_tokens=30)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(len(b) <= 3 and (len(b) == 1 or max(lengths[i] for i in b) * len(b) <= 30) for b in batches)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize(("bidirectional", "layers"), [(True, 1), (True, 2), (False, 2)])
def test_the_padded_encoder_gives_the_packed_outputs_and_gradients(cell, bidirectional, layers):
    """Each direction run on padded rows (the backward one on reversed rows) gives what packing gives."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from ner.model.recurrent import run_padded
    from ner.model.tagger import CELLS

    torch.manual_seed(0)
    rnn = CELLS[cell](5, 4, num_layers=layers, bidirectional=bidirectional, batch_first=True)
    lengths = torch.tensor([6, 6, 3, 1])
    x = torch.randn(4, 6, 5)
    mask = (torch.arange(6) < lengths[:, None]).unsqueeze(2)
    weight = torch.randn(4, 6, 4 * (2 if bidirectional else 1))  # a loss that reads every real position

    def outputs_and_grads(run):
        rnn.zero_grad()
        out = run() * mask
        (out * weight).sum().backward()
        return out.detach(), [p.grad.clone() for p in rnn.parameters()]

    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    expected, expected_grads = outputs_and_grads(
        lambda: pad_packed_sequence(rnn(packed)[0], batch_first=True, total_length=6)[0]
    )
    got, grads = outputs_and_grads(lambda: run_padded(rnn, x, lengths))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    for g, e in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("p", [0.5, 0.3, 0.1])
def test_token_dropout_drops_each_element_independently_with_probability_p(p):
    from ner.model.tagger import TokenDropout

    torch.manual_seed(0)
    drop = TokenDropout(p).train()
    x = torch.ones(200, 50, 40, requires_grad=True)
    out = drop(x)
    kept = out != 0
    values = out.unique().tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / (1 - p), rel=1e-4)
    # every one of the four 16-bit lanes cut from a 64-bit draw keeps 1 - p (the sign bit is random too)
    for lane in range(4):
        assert kept.flatten()[lane::4].float().mean().item() == pytest.approx(1 - p, abs=0.01)
    assert out.mean().item() == pytest.approx(1.0, abs=0.01)  # expected value kept
    out.sum().backward()
    assert torch.equal(x.grad, out.detach())  # the gradient goes through the same mask and scale
    assert not torch.equal(drop(x)[0], out[0])  # a fresh mask per call
    assert torch.equal(drop.eval()(x), x)


def test_sentence_dropout_drops_the_same_features_at_every_position():
    from ner.model.tagger import SentenceDropout

    torch.manual_seed(0)
    drop = SentenceDropout(0.5).train()
    out = drop(torch.ones(3, 7, 50))
    assert set(out.unique().tolist()) == {0.0, 2.0}
    assert torch.equal(out, out[:, :1].expand_as(out))  # one mask per sentence
    assert not torch.equal(out[0], out[1])  # a different one per sentence
    assert torch.equal(drop.eval()(torch.ones(3, 7, 50)), torch.ones(3, 7, 50))
