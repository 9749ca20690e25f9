import itertools

import pytest
import torch

from ner.data import schemes
from ner.model.crf import CRF, allowed_transitions

LABELS = schemes.labels_for(["LOC", "PER"], "bioes")  # 9 tags


def brute_force(crf: CRF, emissions: torch.Tensor, length: int):
    """Every path's score for one sentence: (log partition, best path)."""
    start, end, trans = crf._scores()
    scores = {}
    for path in itertools.product(range(emissions.size(1)), repeat=length):
        s = start[path[0]] + end[path[-1]] + sum(emissions[t, path[t]] for t in range(length))
        s = s + sum(trans[path[t - 1], path[t]] for t in range(1, length))
        scores[path] = s
    values = torch.stack(list(scores.values()))
    return torch.logsumexp(values, 0), max(scores, key=lambda p: scores[p])


def random_crf(num_tags: int, allowed=None) -> CRF:
    torch.manual_seed(0)
    crf = CRF(num_tags, allowed)
    for p in crf.parameters():
        torch.nn.init.normal_(p)
    return crf


@pytest.mark.parametrize("constrained", [False, True])
def test_nll_and_viterbi_match_brute_force_with_padding(constrained):
    k = 4
    labels = ["O", "B-X", "I-X", "B-Y"]
    crf = random_crf(k, allowed_transitions("iob2", labels) if constrained else None)
    emissions = torch.randn(3, 4, k)
    lengths = torch.tensor([4, 2, 1])
    mask = torch.arange(4)[None, :] < lengths[:, None]
    tags = torch.randint(0, k, (3, 4))
    tags[:, 0] = 0  # start from O so the gold path is allowed
    tags[0] = torch.tensor([0, 1, 2, 0])
    nll = crf.nll(emissions, tags, mask)
    best = crf.decode(emissions, mask)
    for b in range(3):
        n = int(lengths[b])
        log_z, path = brute_force(crf, emissions[b], n)
        start, end, trans = crf._scores()
        gold = tags[b, :n].tolist()
        gold_score = start[gold[0]] + end[gold[-1]] + sum(emissions[b, t, gold[t]] for t in range(n))
        gold_score = gold_score + sum(trans[gold[t - 1], gold[t]] for t in range(1, n))
        assert torch.allclose(nll[b], log_z - gold_score, atol=1e-4)
        assert best[b, :n].tolist() == list(path)


def test_bioes_constraints_forbid_invalid_transitions():
    start, end, trans = allowed_transitions("bioes", LABELS)
    idx = {t: i for i, t in enumerate(LABELS)}
    assert not trans[idx["O"], idx["I-PER"]]
    assert not trans[idx["B-LOC"], idx["I-PER"]]
    assert not trans[idx["B-LOC"], idx["O"]]
    assert trans[idx["B-LOC"], idx["E-LOC"]]
    assert trans[idx["S-LOC"], idx["B-PER"]]
    assert trans[idx["E-PER"], idx["O"]]
    assert not start[idx["E-PER"]] and start[idx["S-PER"]]
    assert not end[idx["B-PER"]] and end[idx["E-PER"]]


def test_iob2_constraints_forbid_i_after_o_and_type_changes():
    labels = schemes.labels_for(["LOC", "PER"], "iob2")
    start, end, trans = allowed_transitions("iob2", labels)
    idx = {t: i for i, t in enumerate(labels)}
    assert not start[idx["I-LOC"]]
    assert not trans[idx["O"], idx["I-LOC"]]
    assert not trans[idx["B-PER"], idx["I-LOC"]]
    assert trans[idx["B-LOC"], idx["I-LOC"]] and trans[idx["I-LOC"], idx["B-LOC"]]


def test_constrained_viterbi_never_emits_an_invalid_sequence():
    crf = random_crf(len(LABELS), allowed_transitions("bioes", LABELS))
    emissions = torch.randn(64, 12, len(LABELS)) * 5
    mask = torch.ones(64, 12, dtype=torch.bool)
    for row in crf.decode(emissions, mask).tolist():
        tags = [LABELS[i] for i in row]
        assert schemes.is_valid(tags, "bioes"), tags


def test_batched_decode_equals_one_by_one():
    crf = random_crf(len(LABELS), allowed_transitions("bioes", LABELS))
    emissions = torch.randn(5, 7, len(LABELS))
    lengths = torch.tensor([7, 3, 5, 1, 6])
    mask = torch.arange(7)[None, :] < lengths[:, None]
    batched = crf.decode(emissions, mask)
    for b in range(5):
        n = int(lengths[b])
        single = crf.decode(emissions[b : b + 1, :n], torch.ones(1, n, dtype=torch.bool))
        assert batched[b, :n].tolist() == single[0].tolist()


def _log_partition_by_autograd(emissions, mask, start, end, trans):
    """The plain logsumexp recursion, differentiated by autograd: the reference for the hand-written backward."""
    alpha = start + emissions[:, 0]
    for t in range(1, emissions.size(1)):
        nxt = torch.logsumexp(alpha.unsqueeze(2) + trans, dim=1) + emissions[:, t]
        alpha = torch.where(mask[:, t : t + 1], nxt, alpha)
    return torch.logsumexp(alpha + end, dim=1)


@pytest.mark.parametrize("scale", [1.0, 60.0])  # 60: score gaps past what exp() survives in float32
def test_log_partition_values_and_gradients_match_autograd(scale):
    from ner.model.crf import NEG, LogPartition

    torch.manual_seed(0)
    b, t, k = 4, 7, 6
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] + [0] * 6, [1] * 6 + [0]], dtype=torch.bool)
    emissions = torch.randn(b, t, k) * scale
    emissions[~mask] = 1e4  # junk past each sentence's end must not leak into values or gradients
    trans = torch.randn(k, k) * scale
    trans[0, 1] = trans[2, :] = NEG  # forbidden transitions, as the tag scheme makes them
    start, end = torch.randn(k), torch.randn(k)
    weight = torch.randn(b)

    def run(fn, dtype):
        leaves = [x.to(dtype).requires_grad_() for x in (emissions, start, end, trans)]
        e, s, n, tr = leaves
        value = fn(e.masked_fill(~mask.unsqueeze(2), 0) if fn is _log_partition_by_autograd else e, mask, s, n, tr)
        (value * weight.to(dtype)).sum().backward()
        return value.detach().double(), [x.grad.double() for x in leaves]

    expected, expected_grads = run(_log_partition_by_autograd, torch.float64)
    got, grads = run(LogPartition.apply, torch.float32)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-3)
    for g, e in zip(grads, expected_grads, strict=True):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)


def test_log_partition_gradients_stay_exact_when_float32_backward_overflows():
    """Draws whose float32 forward pass is fine but whose backward vectors overflow must take the float64 path."""
    from ner.model.crf import NEG, LogPartition, _Forward

    torch.manual_seed(0)
    mask = torch.ones(4, 7, dtype=torch.bool)
    checked = 0
    for _ in range(300):
        emissions, trans = torch.randn(4, 7, 6) * 30, torch.randn(6, 6) * 30
        trans[0, 1] = trans[2, :] = NEG
        start, end = torch.randn(6), torch.randn(6)
        forward = _Forward(mask, emissions, start, end, trans)
        if not forward.ok or torch.isfinite(forward.betas()).all():
            continue
        leaves = [x.clone().requires_grad_() for x in (emissions, start, end, trans)]
        LogPartition.apply(leaves[0], mask, *leaves[1:]).sum().backward()
        reference = [x.double().requires_grad_() for x in (emissions, start, end, trans)]
        _log_partition_by_autograd(reference[0], mask, *reference[1:]).sum().backward()
        for got, expected in zip(leaves, reference, strict=True):
            torch.testing.assert_close(got.grad.double(), expected.grad, rtol=1e-4, atol=1e-4)
        checked += 1
    assert checked  # the case occurred and was checked
