"""Documents in, for `ner.tag`: input discovery, decoding, and the streamed documents of a plan's targets.

`input` is a file, a folder (every non-hidden file below it, recursively) or a glob, taken in sorted path order.
Folders and `**` globs follow symlinked folders, but each real folder is walked once and each real file is read
once, so a symlink loop neither repeats files nor hangs. Text input is one document per file, or one per line with
`one_per_line=true` (lines end at "\\n"; a "\\r" before it is dropped; a last line without "\\n" counts, so "a\\nb"
and "a\\nb\\n" are both two documents and "a\\n\\nb\\n" is three, the middle one empty). A leading UTF-8 byte-order
mark is dropped; nothing else is: tabs, control characters and any Unicode stay in the document text. A UTF-16 or
UTF-32 byte-order mark stops the run with one line naming the encoding and how to convert the file (with
`on_decode_error=replace` too: its text would be NUL-interleaved garbage). CoNLL input (`input_format=conll`) is a
whitespace-separated column file, read by the parser training reads with (`ner.data.conll.parse`): token first,
gold tag last (optional), a blank line between sentences, `-DOCSTART-` lines between documents (a file without them
is one document, or none if it has no tokens).
Invalid UTF-8 stops the run with the file and byte offset, unless `on_decode_error=replace`. In a folder or
glob, a file with a NUL byte in its first 8 KiB is binary (git's rule): it is skipped and reported. A file
named alone is always read as text. A document is held in memory whole, with its record, so one over
`max_document_mb` (a whole file, or one line with `one_per_line`) stops the run, named, before it is read: a big
file is tagged with `one_per_line=true`, which streams it in chunks (a 1 GB file runs in flat memory).

Past 300 lines: discovery, decoding and the three readers share one contract with resume (documents' sizes tile
their file, so the bytes read of a file are a prefix of it, which `ner.tagging.writers.InputRecord` hashes).
"""

from __future__ import annotations

import fnmatch
import glob
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from ner.data import conll, schemes

INPUT_FORMATS = ("text", "conll")
DECODE_ERRORS = ("error", "replace")
BINARY_PROBE = 8192  # bytes read to tell binary files (a NUL byte) from text, as git does
_BOM = b"\xef\xbb\xbf"
# longest first: the UTF-32 LE mark begins with the UTF-16 LE one
_OTHER_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32 LE", "UTF-32LE"),
    (b"\x00\x00\xfe\xff", "UTF-32 BE", "UTF-32BE"),
    (b"\xff\xfe", "UTF-16 LE", "UTF-16LE"),
    (b"\xfe\xff", "UTF-16 BE", "UTF-16BE"),
)


class TagError(Exception):
    """A problem with the user's input, output or settings; the message says what and where, in one line."""


@dataclass
class Document:
    """One input document: raw text, or (CoNLL input) sentences of tokens with optional gold tags.

    `error` says why the document cannot be tagged (engine=spark keeps going and writes it in the record;
    engine=local stops instead); `replaced`: undecodable bytes were replaced by U+FFFD (on_decode_error=replace).
    """

    target: int  # index of the output it goes to
    source: str  # the input file
    index: int  # position of the document in its file
    size: int  # input bytes it took (progress); a file's documents' sizes add up to the bytes read of it
    text: str | None = None
    sentences: list[list[str]] | None = None
    gold: list[list[str]] | None = None
    error: str | None = None
    replaced: bool = False

    @property
    def weight(self) -> int:
        """About how much work the document is (characters), for sizing chunks."""
        if self.text is not None:
            return len(self.text) + 1
        return sum(len(w) + 1 for sent in self.sentences or [] for w in sent) + 1


class Source(Protocol):
    """What the reader needs of an output target (`ner.tagging.writers.Target`)."""

    sources: list[Path]
    skip: int
    last: list | None
    done: bool
    partial: Path


# ---------------------------------------------------------------------------------------------------- discovery


def discover(spec: str) -> tuple[Path, list[Path], bool]:
    """(root, files in sorted order, whether a single file was named) for a file, folder or glob."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path.parent, [path], True
    if path.is_dir():
        files = walk(path, ["**", "*"])
        if not files:
            raise TagError(f"input folder {spec} holds no files")
        return path, files, False
    if glob.has_magic(spec):
        parts = Path(os.path.expanduser(spec)).parts
        parts = (*parts, "*") if parts[-1] == "**" else parts  # "docs/**": every file below docs, as glob gives
        fixed = next(i for i, part in enumerate(parts) if glob.has_magic(part))
        root = Path(*parts[:fixed]) if fixed else Path(".")
        files = walk(root, list(parts[fixed:]))
        if not files:
            raise TagError(f"input {spec!r}: no file matches this pattern")
        return Path(os.path.commonpath([str(p.parent) for p in files])), files, False
    raise TagError(f"input {spec!r}: no such file or folder")


def walk(root: Path, pattern: list[str]) -> list[Path]:
    """Files under `root` matching the path segments `pattern` (glob syntax: `*`, `?`, `[..]`, `**` for any
    folders), sorted, hidden names left out as glob does. Symlinked folders are followed, but a real folder is
    entered once per pattern position and a real file listed once: loops end, and nothing is read twice."""
    found: dict[tuple[int, int], Path] = {}
    entered: set[tuple[tuple[int, int], int]] = set()

    def visit(folder: Path, rest: int) -> None:
        if rest == len(pattern):
            return
        try:
            key = _identity(folder)
        except OSError:
            return
        if (key, rest) in entered:
            return
        entered.add((key, rest))
        segment, last = pattern[rest], rest == len(pattern) - 1
        if segment == "**":
            visit(folder, rest + 1)  # no folder at all
            for child in _children(folder):
                if child.is_dir():
                    visit(child, rest)
            return
        children = _children(folder) if glob.has_magic(segment) else [folder / segment]
        for child in children:
            if not fnmatch.fnmatchcase(child.name, segment):
                continue
            if last and child.is_file():
                found.setdefault(_identity(child), child)
            elif not last and child.is_dir():
                visit(child, rest + 1)

    visit(root, 0)
    return sorted(found.values())


def _identity(path: Path) -> tuple[int, int]:
    st = path.stat()  # follows symlinks: the real file or folder
    return st.st_dev, st.st_ino


def _children(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError:
        return []


def is_binary(path: Path) -> bool:
    """A NUL byte in the first 8 KiB (git's rule), unless the file starts with a UTF-16/32 byte-order mark:
    that is text in another encoding, said so when it is read (`decode`), not skipped as binary."""
    with open(path, "rb") as f:
        head = f.read(BINARY_PROBE)
    return b"\0" in head and _other_bom(head) is None


def check_encoding(path: Path) -> None:
    """A TagError now, before any model is loaded, for a file with a UTF-16/32 byte-order mark (see `decode`)."""
    with open(path, "rb") as f:
        error = _encoding_error(f.read(4), path)
    if error is not None:
        raise error


def _encoding_error(raw: bytes, path: str | Path) -> TagError | None:
    """The error for text that starts with a UTF-16/32 byte-order mark: what it is and how to convert it."""
    found = _other_bom(raw)
    if found is None:
        return None
    name, codec = found
    return TagError(
        f"{path}: {name} text (its first bytes are the {name} byte-order mark), but input is read as UTF-8; "
        f"convert it, e.g. `iconv -f {codec} -t UTF-8 {path} > {Path(path).stem}.utf8{Path(path).suffix}`"
    )


def _other_bom(raw: bytes) -> tuple[str, str] | None:
    for mark, name, codec in _OTHER_BOMS:
        if raw.startswith(mark):
            return name, codec
    return None


# ---------------------------------------------------------------------------------------------------- reading


@dataclass
class Reader:
    """Streams the documents of a plan's targets in order, skipping those a resumed output already has."""

    input_format: str = "text"
    one_per_line: bool = False
    on_decode_error: str = "error"
    max_document_bytes: int = 16 << 20  # one document is held in memory whole, with its record: this bounds it
    decode_errors: int = 0  # documents in which undecodable bytes were replaced

    def __post_init__(self) -> None:
        if self.input_format not in INPUT_FORMATS:
            raise TagError(f"input_format={self.input_format!r} is not one of {', '.join(INPUT_FORMATS)}")
        if self.on_decode_error not in DECODE_ERRORS:
            raise TagError(f"on_decode_error={self.on_decode_error!r} is not one of {', '.join(DECODE_ERRORS)}")

    def documents(
        self, targets: list[Source], skipped_bytes: Callable[[int], None] = lambda n: None
    ) -> Iterator[Document]:
        """Documents of every target not yet done; `skipped_bytes` hears of input passed over on resume."""
        for number, target in enumerate(targets):
            if target.done:
                continue
            seen = 0
            for source in target.sources:
                for doc in self._read(source, number):
                    seen += 1
                    if seen > target.skip:
                        yield doc
                        continue
                    skipped_bytes(doc.size)
                    if seen == target.skip and [doc.source, doc.index] != target.last:
                        raise TagError(
                            f"resume: document {target.skip} of the input is {doc.source}#{doc.index}, but "
                            f"{target.partial} ends with {target.last[0]}#{target.last[1]}; rerun with resume=false"
                        )
            if seen < target.skip:
                raise TagError(
                    f"resume: the input has {seen} documents but {target.partial} already holds {target.skip}"
                )

    def _read(self, path: Path, target: int) -> Iterator[Document]:
        if self.input_format == "conll":
            return self._conll(path, target)
        if self.one_per_line:
            return self._lines(path, target)
        return self._whole(path, target)

    def _whole(self, path: Path, target: int) -> Iterator[Document]:
        size = path.stat().st_size
        if size > self.max_document_bytes:
            raise TagError(
                f"{path}: {size:,} bytes is too big for one document (max_document_mb="
                f"{self.max_document_bytes / 2**20:g}); tag it with one_per_line=true (streamed, bounded memory), "
                "split it, or raise max_document_mb"
            )
        raw = path.read_bytes()
        yield Document(target, str(path), 0, len(raw), text=self._decode(raw, path, 0, None))

    def _lines(self, path: Path, target: int) -> Iterator[Document]:
        with open(path, "rb") as f:
            for index, offset, line, size in lines(f, path, limit=self.max_document_bytes):
                yield Document(target, str(path), index, size, text=self._decode(line, path, offset, index + 1))

    def _conll(self, path: Path, target: int) -> Iterator[Document]:
        """The documents of a CoNLL file, parsed as it streams by `ner.data.conll.parse` (tag column optional)."""
        read = [0, 0]  # bytes read so far, bytes of the last line: where a -DOCSTART- line begins

        def pieces() -> Iterator[str]:
            with open(path, "rb") as f:
                for number, raw in enumerate(f, start=1):
                    offset, read[0], read[1] = read[0], read[0] + len(raw), len(raw)
                    yield self._decode(raw, path, offset, number)

        sentences, gold, index, begin, started, tagged = [], [], 0, 0, False, False
        try:
            for item in conll.parse(pieces(), path, tags="optional"):
                if isinstance(item, conll.Sentence):
                    sentences.append(item.tokens)
                    gold.append(item.tags)
                    tagged = item.tags is not None
                    continue
                if started or sentences:  # a -DOCSTART- line ends the open document (it begins the next one)
                    end = read[0] - read[1]
                    yield self._conll_doc(target, path, index, end - begin, sentences, gold, tagged)
                    index, begin, sentences, gold = index + 1, end, [], []
                started = True
        except conll.DataError as err:
            raise TagError(str(err)) from None
        if started or sentences:
            yield self._conll_doc(target, path, index, read[0] - begin, sentences, gold, tagged)

    @staticmethod
    def _conll_doc(target, path, index, size, sentences, gold, tagged) -> Document:
        tags = [schemes.convert(g, "iob2") for g in gold] if tagged else None
        return Document(target, str(path), index, size, sentences=sentences, gold=tags)

    def _decode(self, raw: bytes, path: Path, offset: int, line: int | None) -> str:
        text, replaced = decode(raw, path, offset, line, self.on_decode_error)
        self.decode_errors += replaced
        return text


def lines(
    f: BinaryIO, path: str | Path, start: int = 0, stop: int | None = None, first: int = 0, limit: int | None = None
) -> Iterator[tuple[int, int, bytes, int]]:
    """(index, byte offset, line, size) of every line of the binary file `f` that begins in bytes [start, stop).

    Lines end at "\\n", which is not part of `line`, and neither is a "\\r" before it; a last line without "\\n"
    counts; `size` is the line's bytes with its ending. A line begins at offset 0 and after every "\\n", so byte
    ranges that tile a file give each of its lines exactly once (engine=spark splits big files so); `first` is the
    index of the first line at or after `start`. A line longer than `limit` bytes raises a TagError before it is
    held in memory whole.
    """
    f.seek(max(start - 1, 0))
    if start:  # the line that `start` falls inside belongs to the range before
        while (piece := f.readline(1 << 20)) and not piece.endswith(b"\n"):
            pass
    index, offset = first, f.tell()
    while stop is None or offset < stop:
        raw = f.readline(-1 if limit is None else limit + 1)
        if not raw:
            return
        if limit is not None and len(raw) > limit and not raw.endswith(b"\n"):
            raise TagError(
                f"{path}:{index + 1}: the line is longer than max_document_mb={limit / 2**20:g} "
                "(one document per line); split it, or raise max_document_mb"
            )
        line = raw[:-1] if raw.endswith(b"\n") else raw
        yield index, offset, line[:-1] if line.endswith(b"\r") else line, len(raw)
        index, offset = index + 1, offset + len(raw)


def decode(raw: bytes, path: str | Path, offset: int = 0, line: int | None = None, errors: str = "error"):
    """(UTF-8 text of `raw`, whether bad bytes were replaced); `raw` was found at byte `offset` of `path`.

    A leading UTF-8 BOM of the file (offset 0) is dropped; a UTF-16/32 one raises a TagError naming the encoding,
    whatever `errors` says. With `errors="error"` invalid UTF-8 raises a TagError naming the file, the byte offset
    and the line (`line`, else counted in `raw`); with "replace" it becomes U+FFFD.
    """
    if offset == 0 and raw.startswith(_BOM):
        raw, offset = raw[len(_BOM) :], len(_BOM)
    elif offset == 0 and (error := _encoding_error(raw, path)) is not None:
        raise error
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError as err:
        if errors == "replace":
            return raw.decode("utf-8", "replace"), True
        line = line or raw.count(b"\n", 0, err.start) + 1
        raise TagError(
            f"{path}: invalid UTF-8 at byte offset {offset + err.start} (line {line}): byte 0x{raw[err.start]:02x};"
            " convert the file to UTF-8, or pass on_decode_error=replace to replace bad bytes with U+FFFD"
        ) from None


def chunks(
    docs: Iterable[Document], max_chars: int, max_docs: int, seconds: Counter | None = None
) -> Iterator[list[Document]]:
    """Consecutive groups of documents of about `max_chars` characters (or `max_docs` documents): one chunk is
    one `Annotator` call (both engines). Time spent waiting for the next document goes to `seconds["read"]`."""
    chunk, size, docs = [], 0, iter(docs)
    while True:
        tick = time.perf_counter()
        doc = next(docs, None)
        if seconds is not None:
            seconds["read"] += time.perf_counter() - tick
        if doc is None:
            break
        chunk.append(doc)
        size += doc.weight
        if size >= max_chars or len(chunk) >= max_docs:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk
