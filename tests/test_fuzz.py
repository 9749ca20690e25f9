"""Hostile input for the CoNLL reader: it parses or raises DataError with file and line, nothing else, no hang."""

import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ner.data import schemes
from ner.data.conll import DataError, read_conll

TAGS = st.sampled_from(["O", "B-PER", "I-PER", "E-LOC", "S-ORG", "I-", "B", "X-PER", "b-per", "O-O", "", "-DOCSTART-"])
TOKENS = st.text(alphabet=st.characters(blacklist_categories=("Zs", "Cc", "Cs")), min_size=0, max_size=6)
SEPARATORS = st.sampled_from([" ", "\t", "  ", " \t ", "\u00a0", "\u3000"])


@st.composite
def column_lines(draw):
    width = draw(st.integers(1, 4))
    lines = []
    for _ in range(draw(st.integers(0, 20))):
        kind = draw(st.integers(0, 9))
        if kind == 0:
            lines.append("")
        elif kind == 1:
            lines.append(draw(SEPARATORS).join(draw(TOKENS) for _ in range(draw(st.integers(0, 6)))))
        else:
            cols = [draw(TOKENS) for _ in range(width - 1)] + [draw(TAGS)]
            lines.append(draw(SEPARATORS).join(cols))
    return draw(st.sampled_from(["\n", "\r\n"])).join(lines)


def check(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.txt"
        path.write_bytes(raw)
        try:
            sents = read_conll(path)
        except DataError as err:
            assert re.match(rf"{re.escape(str(path))}(:\d+)?: ", str(err)), str(err)
            return
        for sent in sents:
            assert sent.tokens and len(sent.tokens) == len(sent.tags)
            assert all(schemes.TAG_SHAPE.match(t) for t in sent.tags)
            assert all(tok and not any(c.isspace() for c in tok) for tok in sent.tokens)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_random_bytes_parse_or_raise_data_error(raw):
    check(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(column_lines())
def test_random_columns_whitespace_and_tags_parse_or_raise_data_error(text):
    check(text.encode("utf-8"))


def test_a_huge_single_line_does_not_hang(tmp_path):
    path = tmp_path / "big.txt"
    path.write_text("x O " * 200_000 + "\n")
    try:
        read_conll(path)
    except DataError as err:
        assert ":1:" in str(err)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "I-LOC", "E-LOC"]), max_size=15))
def test_any_tag_sequence_converts_to_a_valid_sequence_with_the_same_spans(tags):
    for scheme in schemes.SCHEMES:
        out = schemes.convert(tags, scheme)
        assert schemes.is_valid(out, scheme)
        assert schemes.spans(out) == schemes.spans(tags)
