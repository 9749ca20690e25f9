"""Documents in, records out, for `ner.tag`: streamed, lossless, atomic and resumable.

Reading. `input` is a file, a folder (every non-hidden file below it, recursively) or a glob, taken in sorted
path order. Text input is one document per file, or one per line with `one_per_line=true` (lines end at "\\n";
a "\\r" before it is dropped; a last line without "\\n" counts, so "a\\nb" and "a\\nb\\n" are both two documents
and "a\\n\\nb\\n" is three, the middle one empty). A leading UTF-8 byte-order mark is dropped; nothing else is:
tabs, control characters and any Unicode stay in the document text. CoNLL input (`input_format=conll`) is a
whitespace-separated column file, read by the parser training reads with (`ner.data.conll.parse`): token first,
gold tag last (optional), a blank line between sentences, `-DOCSTART-` lines between documents (a file without them
is one document, or none if it has no tokens).
Invalid UTF-8 stops the run with the file and byte offset, unless `on_decode_error=replace`. In a folder or
glob, a file with a NUL byte in its first 8 KiB is binary (git's rule): it is skipped and reported. A file
named alone is always read as text. A document is held in memory whole, with its record, so one over
`max_document_mb` (a whole file, or one line with `one_per_line`) stops the run, named, before it is read: a big
file is tagged with `one_per_line=true`, which streams it in chunks (a 1 GB file runs in flat memory).

Writing. Every document gives exactly one record, in input order (`jsonl`: one line; `conll`: a `-DOCSTART-`
line, then the sentences; `spans`: one row per entity, so a document without entities has no rows there).
Output goes to `<output>.partial` and is renamed to `<output>` only when complete, so a file named `<output>`
is always whole. After every chunk the writer records in `<output>.progress.json` how many documents and bytes
of the partial file are complete. `resume=true` truncates the partial file to that point, skips that many input
documents (checking that the last one is the same document) and continues; an output that is already complete
is left as it is. Output may be one file (every input document, each record naming its source) or, when
`output` is an existing folder or ends with "/", one file per input file, named after it
(`news/a.txt` -> `out/a.txt.jsonl`).

JSONL record: {"source": input file, "doc": index of the document in that file (0-based), "text": str,
"sentences": [{"start", "end", "tokens", "offsets": [[start, end]], "tags": [IOB2], "gold": [IOB2] (CoNLL
input with tags only)}], "entities": [{"text", "type", "start", "end"}]}; offsets are character offsets into
"text", end exclusive. For CoNLL input "text" is the tokens joined by spaces, sentences by newlines.

Past 300 lines: reading, resume and writing share the Document/Target bookkeeping that makes a resumed output
equal an uninterrupted one; splitting the readers from the writers is the next clean-up.
"""

from __future__ import annotations

import glob
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import BinaryIO

from ner.data import conll, schemes

INPUT_FORMATS = ("text", "conll")
OUTPUT_FORMATS = {"jsonl": ".jsonl", "conll": ".conll", "spans": ".tsv"}
DECODE_ERRORS = ("error", "replace")
SPANS_HEADER = "source\tdoc\tstart\tend\ttype\ttext\n"
BINARY_PROBE = 8192  # bytes read to tell binary files (a NUL byte) from text, as git does
_BOM = b"\xef\xbb\xbf"
_LINE_SEPARATORS = {"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"}  # str.splitlines() splits on these
_TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


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
    size: int  # input bytes it took (progress)
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


@dataclass
class Target:
    """One output file and the input files that feed it; `skip`/`done` come from a previous run (resume)."""

    output: Path
    sources: list[Path]
    skip: int = 0  # documents already complete in the partial file
    skip_bytes: int = 0  # bytes of the partial file that hold them
    last: list | None = None  # [source, doc] of the last of them, checked against the input
    done: bool = False  # the output is complete: nothing to do

    @property
    def partial(self) -> Path:
        return self.output.with_name(self.output.name + ".partial")

    @property
    def progress(self) -> Path:
        return self.output.with_name(self.output.name + ".progress.json")


@dataclass
class Plan:
    targets: list[Target]
    skipped: list[str] = field(default_factory=list)  # binary input files left out
    folder_output: bool = False


# ---------------------------------------------------------------------------------------------------- planning


def plan(input_spec: str, output: str, fmt: str, resume: bool, settings: dict) -> Plan:
    """Input files, binary files left out, and the output file(s) each feeds, with resume state read in."""
    if fmt not in OUTPUT_FORMATS:
        raise TagError(f"output_format={fmt!r} is not one of {', '.join(OUTPUT_FORMATS)}")
    if not output:
        raise TagError("output= is required: a file (all documents in one) or a folder ending in / (one per input)")
    root, files, named = discover(input_spec)
    files = [p for p in files if not _is_output(p, Path(output))]
    if not files:
        raise TagError(f"input {input_spec!r} holds no files besides the output {output!r}")
    text_files, skipped = [], []
    for path in files:
        if not named and is_binary(path):  # a file named alone is read as text, whatever it holds
            skipped.append(str(path))
        else:
            text_files.append(path)
    folder = output.endswith(("/", os.sep)) or Path(output).is_dir()
    if folder:
        ext = OUTPUT_FORMATS[fmt]
        targets = [Target(Path(output) / f"{_relative(p, root)}{ext}", [p]) for p in text_files]
    else:
        targets = [Target(Path(output), text_files)]
    for target in targets:
        _read_resume_state(target, resume, settings)
    return Plan(targets, skipped, folder)


def discover(spec: str) -> tuple[Path, list[Path], bool]:
    """(root, files in sorted order, whether a single file was named) for a file, folder or glob."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path.parent, [path], True
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            raise TagError(f"input folder {spec} holds no files")
        return path, files, False
    if glob.has_magic(spec):
        files = sorted(Path(p) for p in glob.glob(os.path.expanduser(spec), recursive=True) if Path(p).is_file())
        if not files:
            raise TagError(f"input {spec!r}: no file matches this pattern")
        return Path(os.path.commonpath([str(p.parent) for p in files])), files, False
    raise TagError(f"input {spec!r}: no such file or folder")


def is_binary(path: Path) -> bool:
    with open(path, "rb") as f:
        return b"\0" in f.read(BINARY_PROBE)


def _is_output(path: Path, output: Path) -> bool:
    """Whether `path` is (or is beside, as .partial/.progress.json) an output of this run: never read it back."""
    path, output = path.resolve(), output.resolve()
    names = {output.name + suffix for suffix in ("", ".partial", ".progress.json", ".progress.json.tmp")}
    return output in path.parents or (path.parent == output.parent and path.name in names)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return path.name


def _read_resume_state(target: Target, resume: bool, settings: dict) -> None:
    """Fill `skip`/`done` from the files a previous run left; without resume, start over."""
    if not resume:
        return
    if target.output.is_file() and not target.partial.exists():
        target.done = True
        return
    if not (target.partial.is_file() and target.progress.is_file()):
        return  # nothing usable was written: start over
    try:
        state = json.loads(target.progress.read_text(encoding="utf-8"))
        documents, size, last, before = state["documents"], state["bytes"], state["last"], state["settings"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise TagError(f"{target.progress}: unreadable resume record ({err}); rerun with resume=false") from None
    if before != settings:
        changed = ", ".join(
            f"{k}={before.get(k)!r}->{settings.get(k)!r}" for k in settings if before.get(k) != settings[k]
        )
        raise TagError(f"{target.partial} was written with other settings ({changed}); rerun with resume=false")
    if target.partial.stat().st_size < size:
        raise TagError(f"{target.partial} is shorter than its resume record says; rerun with resume=false")
    target.skip, target.skip_bytes, target.last = documents, size, last


# ---------------------------------------------------------------------------------------------------- reading


@dataclass
class Reader:
    """Streams the documents of a plan's targets in order, skipping those a resumed output already has."""

    input_format: str = "text"
    one_per_line: bool = False
    on_decode_error: str = "error"
    max_document_bytes: int = 64 << 20  # one document is held in memory whole, with its record: this bounds it
    decode_errors: int = 0  # documents in which undecodable bytes were replaced

    def __post_init__(self) -> None:
        if self.input_format not in INPUT_FORMATS:
            raise TagError(f"input_format={self.input_format!r} is not one of {', '.join(INPUT_FORMATS)}")
        if self.on_decode_error not in DECODE_ERRORS:
            raise TagError(f"on_decode_error={self.on_decode_error!r} is not one of {', '.join(DECODE_ERRORS)}")

    def documents(
        self, targets: list[Target], skipped_bytes: Callable[[int], None] = lambda n: None
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

    A leading BOM of the file (offset 0) is dropped. With `errors="error"` invalid UTF-8 raises a TagError naming
    the file, the byte offset and the line (`line`, else counted in `raw`); with "replace" it becomes U+FFFD.
    """
    if offset == 0 and raw.startswith(_BOM):
        raw, offset = raw[len(_BOM) :], len(_BOM)
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


# ---------------------------------------------------------------------------------------------------- writing


def serialise(fmt: str, doc: Document, record: dict) -> str:
    """The text of one document's record in `fmt` (see the module docstring); JSONL: one line, to be written
    through `escape_line_separators`. A record with an `error` (engine=spark) has it as the last JSON field."""
    if fmt == "jsonl":
        sentences = record["sentences"]
        if doc.gold is not None:
            sentences = [{**s, "gold": g} for s, g in zip(sentences, doc.gold, strict=True)]
        out = {"source": doc.source, "doc": doc.index, "text": record["text"], "sentences": sentences}
        out["entities"] = record["entities"]
        if record.get("error") is not None:
            out["error"] = record["error"]
        return json.dumps(out, ensure_ascii=False) + "\n"
    if fmt == "conll":
        gold = doc.gold or [None] * len(record["sentences"])
        lines = ["-DOCSTART-\tO\tO\n\n" if doc.gold is not None else "-DOCSTART-\tO\n\n"]
        for sent, sent_gold in zip(record["sentences"], gold, strict=True):
            columns = (
                (sent["tokens"], sent_gold, sent["tags"]) if sent_gold is not None else (sent["tokens"], sent["tags"])
            )
            lines.extend("\t".join(row) + "\n" for row in zip(*columns, strict=True))
            lines.append("\n")
        return "".join(lines)
    source = doc.source.translate(_TSV_ESCAPES)
    return "".join(
        f"{source}\t{doc.index}\t{e['start']}\t{e['end']}\t{e['type']}\t{e['text'].translate(_TSV_ESCAPES)}\n"
        for e in record["entities"]
    )


def escape_line_separators(text: str) -> str:
    """JSON text with U+2028, U+2029 and U+0085 written as escapes: `str.splitlines()` would split a line there."""
    if any(c in text for c in _LINE_SEPARATORS):
        for char, escaped in _LINE_SEPARATORS.items():
            text = text.replace(char, escaped)
    return text


class Writer:
    """One output file: appended to as `<output>.partial`, renamed to `<output>` by `commit`."""

    def __init__(self, target: Target, fmt: str, settings: dict):
        self.target, self.fmt, self.settings = target, fmt, settings
        self.documents, self.size, self.last = target.skip, target.skip_bytes, target.last
        target.output.parent.mkdir(parents=True, exist_ok=True)
        if target.skip:
            self.file = open(target.partial, "r+b")  # noqa: SIM115 (closed by commit/abort)
            self.file.truncate(target.skip_bytes)
            self.file.seek(target.skip_bytes)
        else:
            self.file = open(target.partial, "wb")  # noqa: SIM115
            if fmt == "spans":
                self._append(SPANS_HEADER.encode())

    def write(self, docs: list[Document], records: list[dict]) -> None:
        text = "".join(serialise(self.fmt, d, r) for d, r in zip(docs, records, strict=True))
        if self.fmt == "jsonl":
            text = escape_line_separators(text)
        self._append(text.encode("utf-8"))
        self.documents += len(docs)
        self.last = [docs[-1].source, docs[-1].index]

    def _append(self, data: bytes) -> None:
        self.file.write(data)
        self.size += len(data)

    def checkpoint(self) -> None:
        """Make what is written so far durable and record it, so that `resume=true` can continue from here."""
        self.file.flush()
        os.fsync(self.file.fileno())
        state = {"documents": self.documents, "bytes": self.size, "last": self.last, "settings": self.settings}
        tmp = self.target.progress.with_name(self.target.progress.name + ".tmp")
        tmp.write_text(json.dumps(state), encoding="utf-8")
        os.replace(tmp, self.target.progress)

    def commit(self, durable: bool) -> None:
        """Close and rename the complete output into place (fsync first if `durable`); drop the resume record."""
        self.file.flush()
        if durable:
            os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.target.partial, self.target.output)
        self.target.progress.unlink(missing_ok=True)

    def abort(self) -> None:
        """Keep the partial output and record how much of it is complete."""
        if self.file.closed:
            return
        try:
            self.checkpoint()
        finally:
            self.file.close()


class Router:
    """Sends each document's record to its target's writer; opens, commits and skips targets in order."""

    def __init__(self, targets: list[Target], fmt: str, settings: dict, durable: bool):
        self.targets, self.fmt, self.settings, self.durable = targets, fmt, settings, durable
        self.next = 0  # first target not yet opened
        self.writer: Writer | None = None
        self.committed = 0

    def write(self, docs: list[Document], records: list[dict]) -> None:
        pairs = list(zip(docs, records, strict=True))
        for number, group in groupby(pairs, key=lambda pair: pair[0].target):
            group = list(group)
            self._advance(number).write([d for d, _ in group], [r for _, r in group])
        if self.writer is not None:
            self.writer.checkpoint()

    def close(self) -> None:
        """Commit every remaining target (an input without documents still gets its, empty, output)."""
        self._advance(len(self.targets))

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()

    def _advance(self, number: int) -> Writer | None:
        """The writer of target `number`, committing the current one and any empty targets in between."""
        if self.writer is not None and self.next - 1 == number:
            return self.writer
        if self.writer is not None:
            self._commit()
        while self.next < number:
            if not self.targets[self.next].done:
                self.writer = Writer(self.targets[self.next], self.fmt, self.settings)
                self._commit()
            self.next += 1
        if number >= len(self.targets):
            return None
        self.writer = Writer(self.targets[number], self.fmt, self.settings)
        self.next = number + 1
        return self.writer

    def _commit(self) -> None:
        self.writer.commit(self.durable)
        self.writer = None
        self.committed += 1
