"""Records out, for `ner.tag`: the output formats, atomic resumable files, devices and FIFOs, and the output lock.

Every document gives exactly one record, in input order (`jsonl`: one line; `conll`: a `-DOCSTART-` line, then
the sentences; `spans`: one row per entity, so a document without entities has no rows there). A regular output
goes to `<output>.partial` and is renamed to `<output>` only when complete, so a file named `<output>` is always
whole; a symlink is followed to the file it names. After every chunk the writer records in
`<output>.progress.json` how many documents and bytes of the partial file are complete, the SHA-256 of those
bytes, and what they were made from: per input file the bytes read and their SHA-256, and the model's identity
(`ner.tagging.files` checks all of it before a resume). A character or block device or a FIFO is written
straight through (no `.partial`, no rename, no resume). One run writes an output at a time: `OutputLock`.

JSONL record: {"source": input file, "doc": index of the document in that file (0-based), "text": str,
"sentences": [{"start", "end", "tokens", "offsets": [[start, end]], "tags": [IOB2], "gold": [IOB2] (CoNLL
input with tags only)}], "entities": [{"text", "type", "start", "end"}]}; offsets are character offsets into
"text", end exclusive. For CoNLL input "text" is the tokens joined by spaces, sentences by newlines. `html`: one
self-contained page (`ner.evaluation.html`), a block per document with its entities highlighted by type and their
scores on hover; its closing tags are written when the output is complete.

Past 300 lines: the formats, the partial and progress files, the input record and the lock are one contract,
what a resume may trust of an earlier run's output; split, each part would only make sense beside the others.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

from ner.evaluation import html
from ner.tagging.readers import Document, TagError

OUTPUT_FORMATS = {"jsonl": ".jsonl", "conll": ".conll", "spans": ".tsv", "html": ".html"}
SPANS_HEADER = "source\tdoc\tstart\tend\ttype\ttext\n"
_LINE_SEPARATORS = {"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"}  # str.splitlines() splits on these
_TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_BLOCK = 1 << 20  # bytes read at a time when hashing


@dataclass
class Target:
    """One output file and the input files that feed it; `skip`/`done`/`inputs`/`hashed` come from a previous run
    (resume). `stream`: a device or FIFO, written straight through."""

    output: Path
    sources: list[Path]
    skip: int = 0  # documents already complete in the partial file
    skip_bytes: int = 0  # bytes of the partial file that hold them
    last: list | None = None  # [source, doc] of the last of them, checked against the input
    done: bool = False  # the output is complete: nothing to do
    stream: bool = False
    model: dict | None = None  # the model the partial output was made with (resume)
    inputs: InputRecord = field(default_factory=lambda: InputRecord())
    hashed: object = None  # SHA-256 state of the partial file's first `skip_bytes` bytes (resume)

    @property
    def partial(self) -> Path:
        return self.output.with_name(self.output.name + ".partial")

    @property
    def progress(self) -> Path:
        return self.output.with_name(self.output.name + ".progress.json")


class InputRecord:
    """What a partial output was made from: per input file in order, the bytes read and their SHA-256.

    Documents' sizes tile their file, so the bytes read of a file are its first `n` bytes; they are hashed from
    the file at each checkpoint (from the page cache, a small cost beside tagging), so the reader stays untouched.
    """

    def __init__(self) -> None:
        self.entries: list[dict] = []  # {"path", "bytes", "hashed", "sha", "size", "mtime_ns"}

    def add(self, source: str, size: int) -> None:
        if not self.entries or self.entries[-1]["path"] != source:
            self.entries.append({"path": source, "bytes": 0, "hashed": 0, "sha": hashlib.sha256()})
        self.entries[-1]["bytes"] += size

    def record(self) -> list[list]:
        """[[path, bytes read, their SHA-256, file size, mtime_ns]] of every input file read so far."""
        out = []
        for entry in self.entries:
            if entry["hashed"] < entry["bytes"] or "size" not in entry:
                entry["hashed"] += _feed(entry["sha"], Path(entry["path"]), entry["hashed"], entry["bytes"])
                st = os.stat(entry["path"])
                entry["size"], entry["mtime_ns"] = st.st_size, st.st_mtime_ns
            out.append([entry["path"], entry["bytes"], entry["sha"].hexdigest(), entry["size"], entry["mtime_ns"]])
        return out

    @classmethod
    def verify(cls, recorded: list[list], sources: list[Path], partial: Path) -> InputRecord:
        """The record of a previous run, re-read from the input files now; a TagError saying what changed."""
        names = [str(p) for p in sources]
        for number, path in enumerate(entry[0] for entry in recorded):
            if number >= len(names) or names[number] != path:
                now = f"is {names[number]}" if number < len(names) else "does not exist"
                raise TagError(
                    f"resume: {partial} was made from input file {number + 1} {path}, but input file {number + 1} "
                    f"now {now} (the input files changed); rerun with resume=false"
                )
        record = cls()
        for path, size, digest, was_size, was_mtime in recorded:
            entry = {"path": path, "bytes": size, "sha": hashlib.sha256(), "size": was_size, "mtime_ns": was_mtime}
            entry["hashed"] = _feed(entry["sha"], Path(path), 0, size)
            if entry["hashed"] < size or entry["sha"].hexdigest() != digest:
                st = os.stat(path)
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(st.st_mtime_ns / 1e9))
                raise TagError(
                    f"resume: input {path} changed since {partial} was made from it: its first {size:,} bytes "
                    f"differ (size {was_size:,} -> {st.st_size:,} bytes, modified {when}); rerun with resume=false"
                )
            record.entries.append(entry)
        return record


def _feed(sha, path: Path, start: int, stop: int) -> int:
    """Hash bytes [start, stop) of `path` into `sha`; returns how many there were (fewer if the file is shorter)."""
    done = 0
    with open(path, "rb") as f:
        f.seek(start)
        while done < stop - start and (block := f.read(min(_BLOCK, stop - start - done))):
            sha.update(block)
            done += len(block)
    return done


def prefix_hash(path: Path, size: int):
    """(SHA-256 state of the first `size` bytes of `path`, how many bytes there were)."""
    sha = hashlib.sha256()
    return sha, _feed(sha, path, 0, size)


# ---------------------------------------------------------------------------------------------------- formats


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
    if fmt == "html":
        return html.document_html(record["text"], record["entities"], f"{doc.source} #{doc.index}")
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


# ---------------------------------------------------------------------------------------------------- files


def write_error(err: OSError, path: Path, documents: int) -> TagError:
    """One line for a failed write: what, where, and what to do."""
    kept = f" after {documents:,} documents (the finished part is kept: rerun with resume=true)" if documents else ""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return TagError(f"{path}: the disk is full{kept}; free space, or choose another output=")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return TagError(f"{path}: not writable ({err.strerror}); choose another output=")
    return TagError(f"{path}: cannot write ({err.strerror or err}){kept}")


class Writer:
    """One output file: appended to as `<output>.partial`, renamed to `<output>` by `commit`; a stream output
    (device, FIFO) is written in place."""

    def __init__(self, target: Target, fmt: str, settings: dict, model: dict | None = None):
        self.target, self.fmt, self.settings, self.model = target, fmt, settings, model
        self.documents, self.size, self.last = target.skip, target.skip_bytes, target.last
        self.checkpointed = target.skip  # documents of the last successful checkpoint
        self.sha = target.hashed if target.skip else hashlib.sha256()
        self.inputs = target.inputs if target.skip else InputRecord()
        path = target.output if target.stream else target.partial
        try:
            target.output.parent.mkdir(parents=True, exist_ok=True)
            if target.skip:
                self.file = open(path, "r+b")  # noqa: SIM115 (closed by commit/abort)
                self.file.truncate(target.skip_bytes)
                self.file.seek(target.skip_bytes)
            else:
                self.file = open(path, "wb")  # noqa: SIM115
                if fmt == "spans":
                    self._append(SPANS_HEADER.encode())
                if fmt == "html":
                    meta = "Entities highlighted by type; hover for the type and the model's score."
                    self._append(html.page_start(f"ner.tag: {target.output.name}", meta).encode())
        except OSError as err:
            raise write_error(err, path, 0) from None

    def write(self, docs: list[Document], records: list[dict]) -> None:
        text = "".join(serialise(self.fmt, d, r) for d, r in zip(docs, records, strict=True))
        if self.fmt == "jsonl":
            text = escape_line_separators(text)
        self._append(text.encode("utf-8"))
        for doc in docs:
            self.inputs.add(doc.source, doc.size)
        self.documents += len(docs)
        self.last = [docs[-1].source, docs[-1].index]

    def _append(self, data: bytes) -> None:
        self.file.write(data)
        self.sha.update(data)
        self.size += len(data)

    def checkpoint(self) -> None:
        """Make what is written so far durable and record it, so that `resume=true` can continue from here."""
        self.file.flush()
        if self.target.stream:
            return
        os.fsync(self.file.fileno())
        state = {
            "documents": self.documents,
            "bytes": self.size,
            "last": self.last,
            "settings": self.settings,
            "output_sha256": self.sha.hexdigest(),
            "inputs": self.inputs.record(),
            "model": self.model,
        }
        tmp = self.target.progress.with_name(self.target.progress.name + ".tmp")
        try:
            tmp.write_text(json.dumps(state), encoding="utf-8")
            os.replace(tmp, self.target.progress)
        except OSError:
            tmp.unlink(missing_ok=True)  # the previous record stays; a half-written one would only take space
            raise
        self.checkpointed = self.documents

    def commit(self, durable: bool) -> None:
        """Close and rename the complete output into place (fsync first if `durable`); drop the resume record."""
        if self.fmt == "html":
            self._append(html.PAGE_END.encode())
        self.file.flush()
        if durable and not self.target.stream:
            os.fsync(self.file.fileno())
        self.file.close()
        if self.target.stream:
            return
        os.replace(self.target.partial, self.target.output)
        self.target.progress.unlink(missing_ok=True)

    def abort(self) -> None:
        """Keep the partial output and record how much of it is complete (if the disk lets us)."""
        if self.file.closed:
            return
        try:
            self.checkpoint()
        except OSError:
            pass  # the previous record still describes a whole prefix of the partial file
        finally:
            try:
                self.file.close()
            except OSError:
                pass  # buffered bytes past the last record: resume truncates them anyway


class Router:
    """Sends each document's record to its target's writer; opens, commits and skips targets in order."""

    def __init__(self, targets: list[Target], fmt: str, settings: dict, durable: bool, model: dict | None = None):
        self.targets, self.fmt, self.settings, self.durable, self.model = targets, fmt, settings, durable, model
        self.next = 0  # first target not yet opened
        self.writer: Writer | None = None
        self.committed = 0

    def write(self, docs: list[Document], records: list[dict]) -> None:
        pairs = list(zip(docs, records, strict=True))
        try:
            for number, group in groupby(pairs, key=lambda pair: pair[0].target):
                group = list(group)
                self._advance(number).write([d for d, _ in group], [r for _, r in group])
            if self.writer is not None:
                self.writer.checkpoint()
        except OSError as err:
            raise self._error(err) from None

    def close(self) -> None:
        """Commit every remaining target (an input without documents still gets its, empty, output)."""
        try:
            self._advance(len(self.targets))
        except OSError as err:
            raise self._error(err) from None

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()

    def _error(self, err: OSError) -> TagError:
        writer = self.writer
        if writer is None:
            return write_error(err, Path(err.filename or "output"), 0)
        path = writer.target.output if writer.target.stream else writer.target.partial
        return write_error(err, path, writer.checkpointed)

    def _advance(self, number: int) -> Writer | None:
        """The writer of target `number`, committing the current one and any empty targets in between."""
        if self.writer is not None and self.next - 1 == number:
            return self.writer
        if self.writer is not None:
            self._commit()
        while self.next < number:
            if not self.targets[self.next].done:
                self.writer = Writer(self.targets[self.next], self.fmt, self.settings, self.model)
                self._commit()
            self.next += 1
        if number >= len(self.targets):
            return None
        self.writer = Writer(self.targets[number], self.fmt, self.settings, self.model)
        self.next = number + 1
        return self.writer

    def _commit(self) -> None:
        self.writer.commit(self.durable)
        self.writer = None
        self.committed += 1


# ---------------------------------------------------------------------------------------------------- lock


def holder_line() -> str:
    """Who holds a lock, for the message of the process it refuses."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime())
    return f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n"


class OutputLock:
    """An exclusive `flock` on `path` for one run's outputs, naming its holder (pid, host, since when) inside.

    The kernel drops the lock when its process dies, however it died, so a stale lock file is simply taken over.
    The file is removed when the run ends; a process that opened it just before must then see that the path now
    names another file (or none) and try again, so two runs can never both hold "the" lock.
    """

    def __init__(self, path: Path):
        self.path, self.file = path, None

    def acquire(self, output: str) -> OutputLock:
        for _ in range(100):
            try:
                lock = open(self.path, "a+")  # noqa: SIM115 - held until release
            except OSError as err:
                raise write_error(err, self.path.parent, 0) from None
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.seek(0)
                holder = lock.read().strip() or "another process"
                lock.close()
                raise TagError(
                    f"output={output} is being written by {holder} (another ner.tag run; lock {self.path}); "
                    "wait for it to end, or choose another output="
                ) from None
            try:
                same = os.fstat(lock.fileno()).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # released and removed between our open and our flock: take the new one
                lock.close()
                continue
            try:  # unbuffered: nothing is left to flush (and fail again) on close
                os.ftruncate(lock.fileno(), 0)
                os.write(lock.fileno(), holder_line().encode())
            except OSError as err:  # the first write of the run: a full disk is found here, before any model
                self.path.unlink(missing_ok=True)
                lock.close()
                raise write_error(err, self.path.parent, 0) from None
            self.file = lock
            return self
        raise TagError(f"{self.path}: cannot take the output lock (it keeps being replaced)")

    def release(self) -> None:
        if self.file is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass  # a read-only folder after all: the next run takes the stale lock over
        self.file.close()
        self.file = None
