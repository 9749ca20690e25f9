"""Pretrained word vectors as users bring them: GloVe text, word2vec/fastText text (an "N DIM" header line), a .gz
of either, word2vec binary; read fast, in bounded memory, and cached so the second run maps them in a second.

Why it is built this way: a 400,000 x 300 GloVe file is 1 GB of text for a 0.48 GB matrix, and 840B is 6 GB for
2.6 GB. Reading it whole, then as lines, then as lists of strings held 24 times the matrix. Here the file is read in
blocks of ~8 MB and each block's values are parsed by numpy straight to float32 and appended to a `.npy` file in
the cache, so parsing holds one block at a time; the matrix is then memory-mapped from the cache, and `Vectors.take`
copies out the rows a model needs by reading the file block by block, so the full table is never resident (a
touched page of a mapping counts in the resident set as much as an allocated one).

The cache entry is keyed by the file's resolved path, size, mtime (ns), inode and device, not by a checksum: hashing
a 1 GB file costs seconds on every run, which is the time the cache is there to save, while any ordinary way of
changing a file (an editor, a download, cp, mv, gunzip) changes its size, mtime or inode. An entry is written in a
temporary folder and renamed into place, so a killed run or two runs at once never leave a half-written one; one
that does not read back whole is removed and rebuilt, with a one-line note.

Every malformed input is a `DataError` naming the file and the line (text) or the word and byte offset (binary).
Words may contain spaces (GloVe 840B has ". . ." and the like): the last DIM fields of a line are its values, and a
line is refused when the field before them is a number too (that is one value too many, not a word with a space).
The first occurrence of a repeated word is kept.

Past 300 lines on purpose: the formats and the cache are one streaming path (each format yields blocks of words and
rows that the cache writer appends), and apart each half would reach into the other's internals.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import mmap
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ner.data.conll import DataError

DEFAULT_CACHE = "~/.cache/ner/vectors"
CACHE_VERSION = 1  # bump when the entry layout or the parsing changes: old entries are then never read
BLOCK = 8 << 20  # bytes of the source read (and parsed) at a time: 32 MB is no faster and holds 0.3 GB, not 0.14
TAKE_BLOCK = 8 << 20  # bytes of the cached matrix read at a time by `Vectors.take`
_HEADER = 128  # bytes reserved for the .npy header, rewritten with the real shape once the rows are counted


@dataclass
class Vectors:
    """Pretrained word vectors: unique words in the file's order (most frequent first) and their rows."""

    words: list[str]
    matrix: np.ndarray  # (num_words, dim) float32; a read-only np.memmap of the cache entry when read through one

    @property
    def dim(self) -> int:
        return self.matrix.shape[1]

    @functools.cached_property
    def index(self) -> dict[str, int]:
        """Row of each word, built once: vocabulary, embeddings and the coverage of every split all look words up
        (2.2M words: a second each time otherwise)."""
        return {w: i for i, w in enumerate(self.words)}

    def take(self, src: np.ndarray, out: np.ndarray, dest: np.ndarray) -> None:
        """`out[dest] = matrix[src]`. A memory-mapped matrix is read through its file, block by block (blocks with
        no wanted row skipped), so copying rows out of it never makes the whole table resident."""
        src, dest = np.asarray(src, dtype=np.int64), np.asarray(dest, dtype=np.int64)
        if not isinstance(self.matrix.base, mmap.mmap) or not len(src):  # in memory, or a slice of a map
            out[dest] = self.matrix[src]
            return
        order = np.argsort(src, kind="stable")
        src, dest = src[order], dest[order]
        num, dim = self.matrix.shape
        per = max(1, TAKE_BLOCK // (4 * dim))  # rows per block
        with open(self.matrix.filename, "rb") as f:
            for block in np.unique(src // per).tolist():
                lo, hi = np.searchsorted(src, [block * per, (block + 1) * per])
                f.seek(self.matrix.offset + block * per * 4 * dim)
                rows = np.fromfile(f, dtype="<f4", count=min(per, num - block * per) * dim).reshape(-1, dim)
                out[dest[lo:hi]] = rows[src[lo:hi] - block * per]


def read_vectors(path: str | Path, cache_dir: str | Path | None = DEFAULT_CACHE, note: Callable = print) -> Vectors:
    """The vectors of `path` (any supported format), from the cache when it holds this very file, else parsed and
    cached. `cache_dir=None`: parsed into a temporary entry and loaded into memory (nothing kept). `note` gets the
    one-line messages (parsed and cached; a broken entry rebuilt)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, "vectors file not found (model.embeddings.path)")
    if cache_dir is None:
        with tempfile.TemporaryDirectory(prefix="ner-vectors-") as tmp:
            words, _ = _parse_into(path, Path(tmp))
            return Vectors(words, np.load(Path(tmp) / "matrix.npy"))
    cache = Path(cache_dir).expanduser()
    entry = cache / _entry_name(path)
    if entry.is_dir():
        try:
            return _load_entry(entry)
        except (OSError, ValueError, KeyError) as err:
            note(f"note: vectors cache {entry} is unreadable ({type(err).__name__}: {err}); rebuilding it")
            shutil.rmtree(entry, ignore_errors=True)
    start = time.perf_counter()
    try:
        _build_entry(path, cache, entry)
    except OSError as err:  # not writable, disk full: the run goes on without a cache
        note(f"note: cannot write the vectors cache in {cache} ({err}); reading {path} without it")
        return read_vectors(path, None, note)
    vectors = _load_entry(entry)
    seconds = time.perf_counter() - start
    note(f"vectors: parsed {path} ({len(vectors.words):,} x {vectors.dim}) in {seconds:.1f} s; cached in {entry}")
    return vectors


# --- the cache -------------------------------------------------------------------------------------------------------


def _entry_name(path: Path) -> str:
    """<hash of the path>-<hash of the file's identity>: one name per version of a file, so a changed file is never
    served from the old entry, and the old entries of the same path can be found (and removed)."""
    resolved = str(path.resolve())
    st = path.stat()
    identity = f"{CACHE_VERSION}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}|{st.st_dev}"
    digest = hashlib.sha256
    return f"{digest(resolved.encode()).hexdigest()[:16]}-{digest(identity.encode()).hexdigest()[:16]}"


def _load_entry(entry: Path) -> Vectors:
    """An entry's words and memory-mapped matrix; ValueError/OSError/KeyError when it does not read back whole."""
    meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
    if meta["version"] != CACHE_VERSION:
        raise ValueError(f"version {meta['version']}, not {CACHE_VERSION}")
    text = (entry / "words.txt").read_bytes().decode("utf-8")
    words = text.split("\n") if text else []
    matrix = np.load(entry / "matrix.npy", mmap_mode="r")
    if matrix.dtype != np.float32 or matrix.shape != (meta["words"], meta["dim"]) or len(words) != meta["words"]:
        raise ValueError(f"matrix {matrix.shape} and {len(words)} words, meta says {meta['words']} x {meta['dim']}")
    return Vectors(words, matrix)


def _build_entry(path: Path, cache: Path, entry: Path) -> None:
    """Parse `path` into a temporary folder of `cache` and rename it to `entry` (atomic: a reader sees no entry or
    a whole one). Older entries of the same path go."""
    cache.mkdir(parents=True, exist_ok=True)
    _remove_stale(cache)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache))
    try:
        _parse_into(path, tmp)
        try:
            os.rename(tmp, entry)
        except OSError:  # another run renamed its entry first: the same file, so the same content
            if not entry.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    prefix = entry.name.split("-")[0]
    for old in cache.glob(f"{prefix}-*"):
        if old != entry:
            shutil.rmtree(old, ignore_errors=True)


def _remove_stale(cache: Path, hours: float = 6.0) -> None:
    """Temporary folders left by killed runs: none of their files written for `hours` (a run still parsing
    writes its matrix every few seconds)."""
    for tmp in cache.glob(".tmp-*"):
        try:
            newest = max([tmp.stat().st_mtime] + [f.stat().st_mtime for f in tmp.iterdir()])
        except OSError:
            continue  # gone meanwhile: renamed by its run, or removed by another
        if newest < time.time() - hours * 3600:
            shutil.rmtree(tmp, ignore_errors=True)


def _parse_into(path: Path, folder: Path) -> tuple[list[str], int]:
    """Parse `path` into folder/{matrix.npy, words.txt, meta.json}, one block at a time; returns (words, dim)."""
    words: list[str] = []
    seen: set[str] = set()
    with _open(path) as stream, open(folder / "matrix.npy", "wb") as out:
        out.write(b"\0" * _HEADER)
        dim, parts = _parts(stream, path)
        for block_words, rows in parts:
            keep = _first_seen(block_words, seen)
            words.extend(w for w, k in zip(block_words, keep, strict=True) if k)
            out.write((rows if all(keep) else rows[np.asarray(keep)]).astype("<f4", copy=False).tobytes())
        if not words:
            raise DataError(path, None, "no vectors found")
        out.seek(0)
        out.write(_npy_header((len(words), dim)))
    (folder / "words.txt").write_bytes("\n".join(words).encode("utf-8"))
    meta = {"version": CACHE_VERSION, "source": str(path.resolve()), "words": len(words), "dim": dim}
    (folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    return words, dim


def _first_seen(words: list[str], seen: set[str]) -> list[bool]:
    """Which of `words` occur here for the first time (`seen` is updated): a repeated word keeps its first row."""
    keep = []
    for word in words:
        keep.append(word not in seen)
        seen.add(word)
    return keep


def _npy_header(shape: tuple[int, int]) -> bytes:
    """A .npy v1 header for a float32 C-order array of `shape`, exactly _HEADER bytes long."""
    text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}"
    pad = _HEADER - 10 - len(text) - 1
    return b"\x93NUMPY\x01\x00" + (_HEADER - 10).to_bytes(2, "little") + (text + " " * pad + "\n").encode("latin1")


# --- the formats -----------------------------------------------------------------------------------------------------


def _open(path: Path):
    """The file's bytes, gunzipped when it starts with gzip's magic number (whatever its name)."""
    try:
        with open(path, "rb") as f:
            magic = f.read(2)
        return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")
    except OSError as err:
        raise DataError(path, None, f"cannot be read ({err.strerror or err})") from None


def _parts(stream, path: Path) -> tuple[int, Iterator[tuple[list[str], np.ndarray]]]:
    """(dim, blocks of (words, rows)) for any format, told apart by the first line and what follows it."""
    head = _read(stream, path, max(BLOCK, 1 << 16), 0)  # the header, a first line and a first vector at least
    while b"\n" not in head and (more := _read(stream, path, BLOCK, len(head))):
        head += more
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    first = head[: head.find(b"\n")] if b"\n" in head else head
    fields = first.split()
    if len(fields) == 2 and all(f.isdigit() for f in fields):
        count, dim = int(fields[0]), int(fields[1])
        rest = head[len(first) + 1 :]
        if dim < 1:
            raise DataError(path, 1, f"the header announces {dim} dimensions")
        if _is_binary(rest, dim):
            return dim, _binary_parts(stream, path, rest, count, dim, len(first) + 1)
        return dim, _text_parts(stream, path, rest, 2, dim, count)
    dim = _first_dim(first, path)
    return dim, _text_parts(stream, path, head, 1, dim, None)


def _read(stream, path: Path, size: int, done: int) -> bytes:
    try:
        return stream.read(size)
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise DataError(path, None, f"cannot be read past byte {done:,} ({err})") from None


def _is_binary(rest: bytes, dim: int) -> bool:
    """After a header: a text file's first line ends in `dim` numbers; word2vec binary has raw float32 bytes there."""
    end = rest.find(b"\n")
    fields = (rest[:end] if end >= 0 else rest).rstrip().split(b" ")
    return not (len(fields) > dim and all(_number(f) for f in fields[-dim:]))


def _first_dim(line: bytes, path: Path) -> int:
    """A headerless (GloVe) file's size, from its first line: the fields after the word."""
    fields = line.rstrip().split(b" ")
    if len(fields) < 2:
        raise DataError(path, 1, "expected a word and its vector values (GloVe or word2vec format)")
    return len(fields) - 1


def _text_parts(stream, path: Path, head: bytes, line: int, dim: int, count: int | None):
    """Blocks of a text file (GloVe, or word2vec/fastText after the header line `line - 1`)."""
    done, rows, carry = len(head), 0, head
    spaces = head[: head.find(b"\n")].count(b" ")  # per line, as the first has them: the fast path's layout
    while True:
        more = _read(stream, path, BLOCK, done)
        done += len(more)
        data = carry + more
        cut = len(data) if not more else data.rfind(b"\n") + 1
        if cut:
            words, values, lines = _parse_text(data[:cut], path, line, dim, spaces)
            rows, line, carry = rows + len(words), line + lines, data[cut:]
            yield words, values
        else:
            carry = data
        if not more:
            break
    if count is not None and rows != count:
        raise DataError(path, 1, f"the header announces {count:,} words, the file has {rows:,}")


def _parse_text(block: bytes, path: Path, line: int, dim: int, spaces: int) -> tuple[list[str], np.ndarray, int]:
    """(words, rows, lines consumed) of whole lines starting at line number `line`: numpy's C reader takes a block
    laid out as the first line is (`spaces` spaces a line, no blank lines, no "\\r"); any other block, and any block
    it refuses, goes line by line, which reads words with spaces and names the line of an error."""
    lines = block.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    fast = _fast_text(block, lines, dim, spaces)
    if fast is not None:
        words, matrix = fast
        return _decode_words(words, range(line, line + len(lines)), path), matrix, len(lines)
    words, values, numbers = [], [], []
    for number, text in enumerate(lines, line):
        text = text.rstrip()  # "\r", and fastText's trailing space
        if not text:
            continue
        spaces = text.count(b" ")
        if spaces == dim:
            word, _, rest = text.partition(b" ")
        else:
            word, rest = _split_odd(text, spaces, dim, path, number)
        words.append(word)
        values.append(rest)
        numbers.append(number)
    try:
        matrix = np.fromstring(b" ".join(values), dtype=np.float32, sep=" ")
    except ValueError:
        matrix = None
    if matrix is None or matrix.size != len(values) * dim:
        _locate_bad_values(values, numbers, dim, path)
    return _decode_words(words, numbers, path), matrix.reshape(len(values), dim), len(lines)


def _fast_text(block: bytes, lines: list[bytes], dim: int, spaces: int) -> tuple[list[bytes], np.ndarray] | None:
    """np.loadtxt of the block's values (it checks that every line has as many fields as the first), or None."""
    if b"\r" in block or not all(lines) or block.count(b" ") != len(lines) * spaces:
        return None
    try:
        matrix = np.loadtxt(
            io.BytesIO(block), dtype=np.float32, delimiter=" ", comments=None, usecols=range(1, dim + 1), ndmin=2
        )
    except ValueError:
        return None
    if matrix.shape != (len(lines), dim):
        return None
    return [text[: text.find(b" ")] for text in lines], matrix


def _split_odd(text: bytes, spaces: int, dim: int, path: Path, number: int) -> tuple[bytes, bytes]:
    """A line with more or fewer fields than a word and `dim` values: a word with spaces, or an error."""
    fields = text.split(b" ")
    if spaces < dim or _number(fields[-dim - 1]):
        raise DataError(path, number, f"expected {dim} values after the word, found {len(fields) - 1}")
    return b" ".join(fields[:-dim]), b" ".join(fields[-dim:])


def _number(field: bytes) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _locate_bad_values(values: list[bytes], numbers: list[int], dim: int, path: Path) -> None:
    """The first line whose values numpy cannot read as `dim` numbers, as a DataError."""
    for rest, number in zip(values, numbers, strict=True):
        fields = rest.split()
        bad = next((f for f in fields if not _number(f)), None)
        if bad is not None:
            raise DataError(path, number, f"vector value {bad.decode('utf-8', 'replace')!r} is not a number")
        if len(fields) != dim:
            raise DataError(path, number, f"expected {dim} values after the word, found {len(fields)}")
    raise DataError(path, numbers[0] if numbers else None, "vector values cannot be read")  # not reached


def _decode_words(words: list[bytes], numbers: Sequence[int], path: Path) -> list[str]:
    try:
        return b"\n".join(words).decode("utf-8").split("\n") if words else []
    except UnicodeDecodeError:
        for word, number in zip(words, numbers, strict=True):
            try:
                word.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(path, number, f"the word is not UTF-8 (byte 0x{word[err.start]:02x})") from None
        raise


def _binary_parts(stream, path: Path, buf: bytes, count: int, dim: int, base: int):
    """Blocks of a word2vec binary file: per word, the word's bytes, a space, `dim` little-endian float32 and an
    optional newline. `buf` is what was read after the header, which ends at byte `base`."""
    row, pos, index = 4 * dim, 0, 0
    while index < count:
        words, raws = [], []
        while index < count and (len(words) * row < BLOCK):
            space = buf.find(b" ", pos)
            if space < 0 and len(buf) - pos > 1 << 20:
                raise DataError(path, None, f"word {index + 1:,} (byte {base + pos:,}): no space in 1 MiB")
            if space < 0 or len(buf) < space + 1 + row:
                more = _read(stream, path, BLOCK, base + len(buf))
                if not more:
                    raise DataError(path, None, _truncated(index, count, dim, base + pos))
                buf, base, pos = buf[pos:] + more, base + pos, 0
                continue
            word = buf[pos:space].lstrip(b"\n")
            if b"\n" in word:
                raise DataError(path, None, f"word {index + 1:,} (byte {base + pos:,}) contains a newline")
            words.append(word)
            raws.append(buf[space + 1 : space + 1 + row])
            pos, index = space + 1 + row, index + 1
        rows = np.frombuffer(b"".join(raws), dtype="<f4").reshape(-1, dim)
        yield _binary_words(words, path, index - len(words)), rows
    tail = buf[pos:] + _read(stream, path, 1 << 16, base + len(buf))
    if tail.strip():
        raise DataError(path, None, f"byte {base + pos:,}: data after the {count:,} words the header announces")


def _truncated(index: int, count: int, dim: int, offset: int) -> str:
    return (
        f"word {index + 1:,} (byte {offset:,}): the file ends inside it; the header announces {count:,} words of"
        f" {dim} float32 values (truncated?)"
    )


def _binary_words(words: list[bytes], path: Path, first: int) -> list[str]:
    try:
        return b"\n".join(words).decode("utf-8").split("\n") if words else []
    except UnicodeDecodeError:
        for i, word in enumerate(words):
            try:
                word.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(path, None, f"word {first + i + 1:,} is not UTF-8 ({word[:40]!r})") from None
        raise
