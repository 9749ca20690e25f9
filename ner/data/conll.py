"""Read CoNLL column files strictly: every problem is a `DataError` that names the file and the line.

NCRF++ and spaCy users lost weeks to readers that silently accepted the wrong column layout; this one refuses
anything it cannot read unambiguously and says where. `parse` is the one grammar of the format, streamed: training
reads whole files through `read_conll`, and `ner.tag input_format=conll` streams documents through it (there the
tag column is optional: a file of tokens alone is tagged as well).
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ner.data.schemes import TAG_SHAPE

DOCSTART = "-DOCSTART-"
TAGS = ("required", "optional")


class DataError(ValueError):
    """A user's data file cannot be read; the message names the file and the line."""

    def __init__(self, path: str | Path, line: int | None, problem: str):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path, self.line, self.problem = str(path), line, problem


@dataclass
class Sentence:
    tokens: list[str]
    tags: list[str] | None  # None: a file without a tag column (`parse(..., tags="optional")`)
    line: int  # 1-based line of the first token, for error messages
    document: int = 0  # index of the document (-DOCSTART- section) the sentence belongs to


@dataclass(frozen=True)
class DocStart:
    """A `-DOCSTART-` line: the document before it ends, a new one (possibly empty) begins."""

    line: int


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
    items = list(parse([text], path, tag_column, token_column))
    sentences = [item for item in items if isinstance(item, Sentence)]
    if not any(isinstance(item, DocStart) for item in items):
        for index, sent in enumerate(sentences):
            sent.document = index
    return sentences


def parse(
    pieces: Iterable[str], path: str | Path, tag_column: int = -1, token_column: int = 0, tags: str = "required"
) -> Iterator[Sentence | DocStart]:
    """Every `Sentence` of a column file as it ends, and a `DocStart` for each `-DOCSTART-` line, in file order.

    `pieces`: the decoded text in consecutive pieces that end at line breaks (the whole text, or a stream's lines
    read up to each "\\n"); lines are numbered as `str.splitlines()` numbers them, from 1. A sentence's `document`
    counts the `-DOCSTART-` lines before it. The first token line fixes the number of columns. `tags="required"`:
    that line needs a token and a tag column, and every tag must be O/B-/I-/E-/S- shaped. `tags="optional"`:
    the file has a tag column (the last one) if the first token line has more than one column and its last is tag
    shaped; otherwise only tokens are read and `Sentence.tags` is None.
    """
    if tags not in TAGS:
        raise ValueError(f"tags={tags!r} is not one of {', '.join(TAGS)}")
    tokens: list[str] = []
    labels: list[str] = []
    first_line, width, document, tagged, number = 0, 0, 0, False, 0
    for piece in pieces:
        for line in piece.splitlines():
            number += 1
            cols = line.split()
            if not cols or cols[0] == DOCSTART:
                if tokens:
                    yield Sentence(tokens, labels if tagged else None, first_line, document)
                    tokens, labels = [], []
                if cols:
                    document += 1
                    yield DocStart(number)
                continue
            if not width:
                width = len(cols)
                if tags == "required":
                    if width < 2:
                        raise DataError(path, number, f"expected a token and a tag column, found 1 column: {line!r}")
                    _check_columns(path, number, width, tag_column, token_column)
                tagged = tags == "required" or (width > 1 and bool(TAG_SHAPE.match(cols[tag_column])))
            if len(cols) != width:
                raise DataError(path, number, f"expected {width} columns like the first token line, found {len(cols)}")
            if tagged:
                tag = cols[tag_column]
                if not TAG_SHAPE.match(tag):
                    where = f"(tag column {tag_column})" if tags == "required" else "in the last column"
                    raise DataError(path, number, f"tag {tag!r} is not O or B-/I-/E-/S-<TYPE> {where}")
                labels.append(tag)
            if not tokens:
                first_line = number
            tokens.append(cols[token_column])
    if tokens:
        yield Sentence(tokens, labels if tagged else None, first_line, document)


def _check_columns(path: str | Path, line: int, width: int, tag_column: int, token_column: int) -> None:
    for name, col in (("tag_column", tag_column), ("token_column", token_column)):
        if not -width <= col < width:
            raise DataError(path, line, f"data.{name}={col} but the file has {width} columns")
