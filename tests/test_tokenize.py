"""Tests for the offset-preserving CoNLL-style tokeniser and sentence splitter in ``ner.data.tokenize``."""

from __future__ import annotations

import json
import subprocess
import sys
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ner.data.tokenize import Token, sentences, split_sentences, token_spans, tokenize
from tests.conftest import ROOT

ZERO_WIDTH = {"\u200b", "\u2060", "\ufeff"}
HANG_LIMIT_S = 30  # per pathological input, interpreter start included


def texts(text: str, offset: int = 0) -> list[str]:
    return [t.text for t in tokenize(text, offset)]


def sentence_texts(text: str, max_len: int = 0) -> list[list[str]]:
    return [[t.text for t in s] for s in sentences(text, max_len)]


def is_separator(ch: str) -> bool:
    return ch.isspace() or unicodedata.category(ch) == "Cc" or ch in ZERO_WIDTH


def assert_offsets_exact(doc: str, tokens: list[Token]) -> None:
    assert all(doc[t.start : t.end] == t.text for t in tokens)
    assert all(t.text for t in tokens)
    assert all(a.end <= b.start for a, b in zip(tokens, tokens[1:], strict=False))


def test_empty_and_blank_text_give_no_tokens_and_no_sentences():
    assert tokenize("") == []
    assert tokenize(" \t\r\n\u00a0\u200b\x00") == []
    assert sentences("") == []
    assert sentences("  \n\n ") == []


def test_token_records_text_and_offsets():
    assert tokenize("He left.") == [Token("He", 0, 2), Token("left", 3, 7), Token(".", 7, 8)]


def test_offset_argument_shifts_offsets_into_the_larger_document():
    doc = "Intro. Mr. Smith's car."
    tokens = tokenize(doc[7:], offset=7)
    assert [t.text for t in tokens] == ["Mr.", "Smith", "'s", "car", "."]
    assert_offsets_exact(doc, tokens)


def test_token_spans_match_tokenize():
    doc = "Germany's \U0001f44d\U0001f3fd players' don't, U.S. 50%!"
    assert token_spans(doc) == [(t.start, t.end) for t in tokenize(doc)]
    assert token_spans(doc[3:], offset=3) == [(t.start, t.end) for t in tokenize(doc[3:], 3)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a\tb\nc\r\nd\u00a0e\u2003f\u3000g", ["a", "b", "c", "d", "e", "f", "g"]),
        ("zero\u200bwidth\ufeffjoiners\u2060gone", ["zero", "width", "joiners", "gone"]),
        ("ctrl\x00char\x07s\x7fdrop\x9fped", ["ctrl", "char", "s", "drop", "ped"]),
    ],
)
def test_whitespace_zero_width_and_control_chars_separate_tokens(text, expected):
    assert texts(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hi, there; now: yes! no? (a) [b] {c}", "Hi , there ; now : yes ! no ? ( a ) [ b ] { c }"),
        ("He said \"go\" and 'stay'", "He said \" go \" and ' stay '"),
        ("``quoted''", "`` quoted ''"),
        ("wait\u2026 \u201cok\u201d \u00abnon\u00bb", "wait \u2026 \u201c ok \u201d \u00ab non \u00bb"),
        ("a/b + c = d * e | f ~ g", "a/b + c = d * e | f ~ g"),
    ],
)
def test_punctuation_is_split_off(text, expected):
    assert texts(text) == expected.split(" ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("He left.", ["He", "left", "."]),
        ("It rose 3.5.", ["It", "rose", "3.5", "."]),
        ("See www.reuters.com.", ["See", "www.reuters.com", "."]),
    ],
)
def test_sentence_final_period_is_its_own_token(text, expected):
    assert texts(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("the U.S. and U.N. said", ["the", "U.S.", "and", "U.N.", "said"]),
        ("in the U.S.", ["in", "the", "U.S."]),
        ("e.g. a Ph.D. at 5 p.m.", ["e.g.", "a", "Ph.D.", "at", "5", "p.m."]),
        ("e.g., this", ["e.g.", ",", "this"]),
        ("U.S.-led talks", ["U.S.-led", "talks"]),
    ],
)
def test_abbreviations_with_internal_periods_keep_their_final_period(text, expected):
    assert texts(text) == expected


@pytest.mark.parametrize(
    "title", ["Mr.", "Mrs.", "Dr.", "St.", "Jan.", "Corp.", "Inc.", "Ltd.", "Co.", "No.", "vs.", "Calif."]
)
def test_title_and_common_abbreviations_keep_their_period(title):
    assert texts(f"{title} Smith") == [title, "Smith"]
    assert texts(f"with {title}") == ["with", title]


def test_single_capital_initials_keep_their_period_but_pronoun_i_does_not():
    assert texts("John F. Kennedy") == ["John", "F.", "Kennedy"]
    assert texts("so did I.") == ["so", "did", "I", "."]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1996-08-22", ["1996-08-22"]),
        ("3.5 1,000 1,234,567 10:30 1/2", ["3.5", "1,000", "1,234,567", "10:30", "1/2"]),
        ("50% 5.5%", ["50", "%", "5.5", "%"]),
        ("$5 $ 5 \u00a3300 \u20ac2", ["$", "5", "$", "5", "\u00a3", "300", "\u20ac", "2"]),
        ("US$5 HK$ 3", ["US$", "5", "HK$", "3"]),
        ("-5 and +3.2 vs 6-4", ["-5", "and", "+3.2", "vs", "6-4"]),
        ("hit .500 rate", ["hit", ".500", "rate"]),
        ("1, 2, and 3", ["1", ",", "2", ",", "and", "3"]),
    ],
)
def test_dates_numbers_percent_and_currency(text, expected):
    assert texts(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pro-democracy Anglo-Dutch", ["pro-democracy", "Anglo-Dutch"]),
        ("AT&T and S&P", ["AT&T", "and", "S&P"]),
        ("pro- and anti-abortion", ["pro-", "and", "anti-abortion"]),
        ("well--known", ["well", "--", "known"]),
        ("O'Neill o'clock", ["O'Neill", "o'clock"]),
    ],
)
def test_hyphenated_and_internal_apostrophe_words_are_kept_whole(text, expected):
    assert texts(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("see https://example.com/a?b=1&c=2.", ["see", "https://example.com/a?b=1&c=2", "."]),
        ("(http://x.org/path)", ["(", "http://x.org/path", ")"]),
        ("www.reuters.com/news", ["www.reuters.com/news"]),
        ("mail john.smith@reuters.com, now", ["mail", "john.smith@reuters.com", ",", "now"]),
        ("@reuters and #Election2024!", ["@reuters", "and", "#Election2024", "!"]),
    ],
)
def test_urls_emails_mentions_and_hashtags_are_kept_whole(text, expected):
    assert texts(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Germany's", ["Germany", "'s"]),
        ("Germany\u2019s", ["Germany", "\u2019s"]),
        ("IT'S", ["IT", "'S"]),
        ("don't can't won't", ["do", "n't", "ca", "n't", "wo", "n't"]),
        ("DON'T isn\u2019t", ["DO", "N'T", "is", "n\u2019t"]),
        ("they're we've I'll he'd I'm", ["they", "'re", "we", "'ve", "I", "'ll", "he", "'d", "I", "'m"]),
        ("the players' union", ["the", "players", "'", "union"]),
        ("Germany 's", ["Germany", "'s"]),
    ],
)
def test_possessive_s_and_contractions_are_split_off(text, expected):
    assert texts(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Wait... what", ["Wait", "...", "what"]),
        ("wait...what", ["wait", "...", "what"]),
        ("No!!! Really?!", ["No", "!!!", "Really", "?!"]),
        ("ok.. fine", ["ok", "..", "fine"]),
    ],
)
def test_ellipsis_and_repeated_final_punctuation_are_one_token(text, expected):
    assert texts(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hi\U0001f600there", ["hi", "\U0001f600", "there"]),
        ("\U0001f44d\U0001f3fd", ["\U0001f44d\U0001f3fd"]),
        ("\U0001f468\u200d\U0001f469\u200d\U0001f467", ["\U0001f468\u200d\U0001f469\u200d\U0001f467"]),
        ("\U0001f1e9\U0001f1ea\U0001f1eb\U0001f1f7", ["\U0001f1e9\U0001f1ea", "\U0001f1eb\U0001f1f7"]),
        ("\u2764\ufe0f\U0001f600", ["\u2764\ufe0f", "\U0001f600"]),
        ("\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f", None),
    ],
)
def test_emoji_sequences_are_single_tokens(text, expected):
    assert texts(text) == (expected or [text])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("東京都は。大阪", "東京都は 。 大阪"),
        ("Привет, мир!", "Привет , мир !"),
        ("مرحبا، عالم", "مرحبا ، عالم"),
        ("हिन्दी भाषा।", "हिन्दी भाषा ।"),
        ("cafe\u0301 Zu\u0308rich", "cafe\u0301 Zu\u0308rich"),
    ],
)
def test_non_latin_scripts_and_combining_marks_stay_in_their_word(text, expected):
    assert texts(text) == expected.split(" ")


MESSY = (
    "Line one.\r\nTab\there\x00ctrl \u00a0nbsp \u200bzw \U0001f44b\U0001f3ff hi \U0001f469\u200d\U0001f4bb "
    "\U0001f1fa\U0001f1f8 مرحبا 你好世界 Москва नमस्ते e\u0301te\u0301 Z\u0327 "
    '"q\u0301" \x1b[0m\u2028end\u2029'
)


def test_offsets_slice_the_original_text_on_messy_input():
    tokens = tokenize(MESSY)
    assert_offsets_exact(MESSY, tokens)
    assert "".join(t.text for t in tokens) == "".join(c for c in MESSY if not is_separator(c))


def test_offsets_slice_the_original_text_on_a_20000_token_line():
    doc = " ".join(["Germany's", "U.S.", "don't", "3.5%", "\U0001f44d\U0001f3fd", "pro-democracy,"] * 2500)
    tokens = tokenize(doc)
    assert len(tokens) > 20000
    assert_offsets_exact(doc, tokens)


def sep_text() -> st.SearchStrategy[str]:
    pieces = list(" \t\n\r\x00\u00a0\u200b.,'\"-!?$%@#:/&()`\u2019") + ["n't", "'s", "U.S.", "Mr.", "1,0"]
    alphabet = st.sampled_from(pieces)
    return st.lists(st.one_of(alphabet, st.text(max_size=4)), max_size=30).map("".join)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), sep_text()))
def test_tokenize_loses_nothing_but_separators(text):
    tokens = tokenize(text)
    assert_offsets_exact(text, tokens)
    assert not any(is_separator(c) for t in tokens for c in t.text)
    assert "".join(t.text for t in tokens) == "".join(c for c in text if not is_separator(c))


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), sep_text()), st.integers(min_value=0, max_value=5))
def test_split_sentences_partitions_tokens_and_respects_max_len(text, max_len):
    tokens = tokenize(text)
    result = split_sentences(tokens, text, max_len)
    assert [t for s in result for t in s] == tokens
    assert all(result)
    if max_len:
        assert all(len(s) <= max_len for s in result)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("He left. She came.", [["He", "left", "."], ["She", "came", "."]]),
        ("Why? Because! 3 more... Yes", [["Why", "?"], ["Because", "!"], ["3", "more", "..."], ["Yes"]]),
        ('He said "Go." Then left.', [["He", "said", '"', "Go", ".", '"'], ["Then", "left", "."]]),
        ('Stop. "Go," he said.', [["Stop", "."], ['"', "Go", ",", '"', "he", "said", "."]]),
        ("(It ended.) Next", [["(", "It", "ended", ".", ")"], ["Next"]]),
        ("It is 5. and more. (see)", [["It", "is", "5", ".", "and", "more", "."], ["(", "see", ")"]]),
        ("Mr. Smith met Dr. Jones.", [["Mr.", "Smith", "met", "Dr.", "Jones", "."]]),
        ("born in the U.S. He said", [["born", "in", "the", "U.S.", "He", "said"]]),
        ("\u4f60\u597d\u3002\u518d\u89c1", [["\u4f60\u597d", "\u3002"], ["\u518d\u89c1"]]),
    ],
)
def test_sentences_end_after_final_punctuation_before_a_sentence_start(text, expected):
    assert sentence_texts(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("HEADLINE HERE\nBody text", [["HEADLINE", "HERE"], ["Body", "text"]]),
        ("one\r\ntwo\rthree\u2028four", [["one"], ["two"], ["three"], ["four"]]),
        ("para one\n\n\npara two", [["para", "one"], ["para", "two"]]),
        ("in the U.S.\nnext line", [["in", "the", "U.S."], ["next", "line"]]),
    ],
)
def test_every_line_break_ends_a_sentence(text, expected):
    assert sentence_texts(text) == expected


def test_max_len_cuts_long_sentences_into_bounded_chunks():
    doc = " ".join(["word"] * 100_000)
    chunks = sentences(doc, max_len=128)
    assert max(len(c) for c in chunks) == 128
    assert sum(len(c) for c in chunks) == 100_000
    assert [len(c) for c in sentences("a b c d e. F g", max_len=2)] == [2, 2, 2, 2]


def test_split_sentences_uses_document_offsets_of_tokens_from_a_slice():
    doc = "Header\nFirst one. Second one."
    tokens = tokenize(doc[7:], offset=7)
    assert [[t.text for t in s] for s in split_sentences(tokens, doc)] == [
        ["First", "one", "."],
        ["Second", "one", "."],
    ]


@pytest.mark.parametrize(
    "doc",
    ["a." * 500_000, "'" * 1_000_000, "-" * 1_000_000, "a-" * 500_000, "+1" * 500_000, "x" + " " * 1_000_000],
    ids=["a-dot", "quotes", "hyphens", "a-hyphen", "plus-one", "trailing-space"],
)
def test_pathological_megabyte_input_does_not_backtrack(doc):
    """Tokenised in a child process that is killed after HANG_LIMIT_S: a backtracking regex fails, never hangs.

    (A thread could not be stopped: `re` holds the GIL for the whole match.) Linear time is well under a second
    here; the limit is generous so a busy machine does not fail it, and still far below any quadratic case.
    """
    code = (
        "import json, sys, time\n"
        "from ner.data.tokenize import tokenize\n"
        "doc = sys.stdin.read()\n"
        "started = time.perf_counter()\n"
        "tokens = tokenize(doc)\n"
        "print(json.dumps([time.perf_counter() - started, sum(len(t.text) for t in tokens)]))\n"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            input=doc,
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=HANG_LIMIT_S,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"tokenize did not finish a {len(doc):,}-character input within {HANG_LIMIT_S} s")
    assert proc.returncode == 0, proc.stderr[-2000:]
    seconds, chars = json.loads(proc.stdout)
    assert chars == len(doc.replace(" ", "")), f"took {seconds:.2f} s"
