"""Read CoNLL column files strictly: every problem is a `DataError` that names the file and the line.

NCRF++ and spaCy users lost weeks to readers that silently accepted the wrong column layout; this one refuses
anything it cannot read unambiguously and says where.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import Path

from ner.data.schemes import TAG_SHAPE


class DataError(ValueError):
    """A user's data file cannot be read; the message names the file and the line."""

    def __init__(self, path: str | Path, line: int | None, problem: str):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path, self.line, self.problem = str(path), line, problem


@dataclass
class Sentence:
    tokens: list[str]
    tags: list[str]
    line: int  # 1-based line of the first token, for error messages
    document: int = 0  # index of the document (-DOCSTART- section) the sentence belongs to


def decode(raw: bytes, path: str | Path) -> str:
    """UTF-8 (BOM tolerated) or a DataError at the first bad byte's line."""
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataError(path, line, f"byte 0x{raw[err.start]:02x} at offset {err.start} is not UTF-8") from None


def read_conll(path: str | Path, tag_column: int = -1, token_column: int = 0) -> list[Sentence]:
    """Sentences of a column file: any whitespace between columns, a blank line between sentences.

    `-DOCSTART-` lines are dropped but numbered: each starts a new `document`, which the model may read its
    sentences in the context of (`model.context_tokens`). A file without any is taken as unrelated sentences (one
    document each): packing, say, tweets together would invent a context. CRLF, a BOM and a missing final newline
    are fine. The number of columns is fixed by the first token line; a line with another count, or a tag that is
    not O/B-/I-/E-/S- shaped, is an error.
    """
    text = decode(Path(path).read_bytes(), path)
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    first_line = 0
    width = 0
    document = 0  # -DOCSTART- lines seen so far
    for number, line in enumerate(text.splitlines(), start=1):
        cols = line.split()
        if not cols or cols[0] == "-DOCSTART-":
            if tokens:
                sentences.append(Sentence(tokens, tags, first_line, document))
                tokens, tags = [], []
            document += bool(cols)
            continue
        if not width:
            width = len(cols)
            if width < 2:
                raise DataError(path, number, f"expected a token and a tag column, found 1 column: {line!r}")
            _check_columns(path, number, width, tag_column, token_column)
        if len(cols) != width:
            raise DataError(path, number, f"expected {width} columns like the first token line, found {len(cols)}")
        tag = cols[tag_column]
        if not TAG_SHAPE.match(tag):
            raise DataError(path, number, f"tag {tag!r} is not O or B-/I-/E-/S-<TYPE> (tag column {tag_column})")
        if not tokens:
            first_line = number
        tokens.append(cols[token_column])
        tags.append(tag)
    if tokens:
        sentences.append(Sentence(tokens, tags, first_line, document))
    if not document:
        for index, sent in enumerate(sentences):
            sent.document = index
    return sentences


def _check_columns(path: str | Path, line: int, width: int, tag_column: int, token_column: int) -> None:
    for name, col in (("tag_column", tag_column), ("token_column", token_column)):
        if not -width <= col < width:
            raise DataError(path, line, f"data.{name}={col} but the file has {width} columns")
