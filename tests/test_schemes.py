import random

import pytest

from ner.data import schemes


def test_iob1_is_converted_to_bioes():
    iob1 = ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-LOC", "I-ORG"]
    assert schemes.convert(iob1, "bioes") == ["B-PER", "E-PER", "O", "S-LOC", "B-LOC", "E-LOC", "S-ORG"]


def test_iob1_is_converted_to_iob2():
    assert schemes.convert(["I-LOC", "B-LOC", "O", "I-MISC"], "iob2") == ["B-LOC", "B-LOC", "O", "B-MISC"]


def test_iob2_to_iob1_uses_b_only_between_adjacent_same_type_entities():
    assert schemes.convert(["B-LOC", "B-LOC", "I-LOC", "B-PER"], "iob1") == ["I-LOC", "B-LOC", "I-LOC", "I-PER"]


def test_invalid_iob2_is_read_the_way_conlleval_reads_it():
    # conlleval starts a chunk at an I- after O or after another type
    assert schemes.spans(["O", "I-PER", "I-PER", "I-LOC"]) == [(1, 3, "PER"), (3, 4, "LOC")]
    assert schemes.convert(["O", "I-PER"], "iob2") == ["O", "B-PER"]


def test_bioes_spans_end_at_e_and_s():
    assert schemes.spans(["B-PER", "E-PER", "S-PER", "I-PER"]) == [(0, 2, "PER"), (2, 3, "PER"), (3, 4, "PER")]


@pytest.mark.parametrize("scheme", ["iob1", "iob2", "bioes"])
def test_conversion_round_trips_on_random_valid_sequences(scheme):
    rng = random.Random(0)
    for _ in range(500):
        n = rng.randint(0, 12)
        span_list, i = [], 0
        while i < n:
            if rng.random() < 0.4:
                length = rng.randint(1, min(3, n - i))
                span_list.append((i, i + length, rng.choice(["PER", "LOC", "B-ish"])))
                i += length
            else:
                i += 1
        tags = schemes.from_spans(span_list, n, scheme)
        assert schemes.spans(tags) == span_list
        for other in schemes.SCHEMES:
            assert schemes.convert(schemes.convert(tags, other), scheme) == tags
        assert schemes.is_valid(tags, scheme)


def test_detects_each_scheme():
    assert schemes.detect([["I-PER", "O"]]) == "iob1"
    assert schemes.detect([["B-PER", "I-PER", "O"]]) == "iob2"
    assert schemes.detect([["S-PER", "O"]]) == "bioes"


def test_unknown_scheme_is_refused_with_its_name():
    with pytest.raises(ValueError, match="iobx"):
        schemes.convert(["O"], "iobx")
