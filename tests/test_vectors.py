"""Reading pretrained vectors (ner/data/vectors.py) and keeping some of them (ner/data/vocab.py): every format to
the same words and rows, every malformed file as one line naming where, the cache, and trimming."""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

import numpy as np
import pytest

from ner.config import ConfigError
from ner.data import vectors as vectors_module
from ner.data.conll import DataError
from ner.data.vocab import EmbeddingsConfig, Vectors, build_word_vocab, init_embeddings, read_vectors
from tests.conftest import compose_train

WORDS = ["the", ",", "café", "new", "york", "berlin"]
# multiples of 1/64: exact in float32 and in their decimal text, so every format must give the very same matrix
MATRIX = (np.arange(len(WORDS) * 4, dtype=np.float32).reshape(-1, 4) - 11) / 64


def glove(rows=None, words=WORDS, end="\n", trailing="") -> bytes:
    rows = MATRIX if rows is None else rows
    return "".join(
        f"{w} {' '.join(repr(float(x)) for x in r)}{trailing}{end}" for w, r in zip(words, rows, strict=True)
    ).encode()


def header(text: bytes, words=WORDS, dim=4) -> bytes:
    return f"{len(words)} {dim}\n".encode() + text


def binary(words=WORDS, rows=MATRIX, newline=True) -> bytes:
    out = f"{len(words)} {rows.shape[1]}\n".encode()
    for w, r in zip(words, rows, strict=True):
        out += w.encode() + b" " + r.astype("<f4").tobytes() + (b"\n" if newline else b"")
    return out


FORMATS = {
    "glove.txt": glove(),
    "word2vec.txt": header(glove()),
    "fasttext.vec": header(glove(trailing=" ")),  # fastText ends each line with a space
    "windows.txt": glove(end="\r\n"),
    "word2vec.bin": binary(),
    "word2vec-no-newlines.bin": binary(newline=False),
    "glove.txt.gz": gzip.compress(glove()),
    "word2vec.txt.gz": gzip.compress(header(glove())),
    "word2vec.bin.gz": gzip.compress(binary()),
    "gzipped-without-the-suffix.txt": gzip.compress(glove()),  # told by its magic bytes, not its name
}


def read(tmp_path: Path, name: str, content: bytes, **kwargs) -> Vectors:
    path = tmp_path / name
    path.write_bytes(content)
    return read_vectors(path, cache_dir=kwargs.pop("cache_dir", tmp_path / "cache"), note=lambda _: None, **kwargs)


@pytest.mark.parametrize("name", FORMATS)
def test_every_format_reads_to_the_same_words_and_matrix(tmp_path, name):
    vectors = read(tmp_path, name, FORMATS[name])
    assert vectors.words == WORDS
    assert np.array_equal(np.asarray(vectors.matrix), MATRIX) and vectors.matrix.dtype == np.float32


def test_a_file_read_in_many_blocks_gives_what_one_block_gives_and_counts_lines_across_them(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    rows = rng.integers(-64, 64, size=(3000, 4)) / 64  # 100 kB: more than the first read (64 kB)
    words = [f"w{i}" for i in range(3000)]
    text = glove(rows, words)
    whole = read(tmp_path, "a.txt", text)
    monkeypatch.setattr(vectors_module, "BLOCK", 64)  # a few lines a block
    blocks = read(tmp_path, "b.txt", text)
    assert blocks.words == whole.words == words and np.array_equal(blocks.matrix, whole.matrix)
    assert np.array_equal(read(tmp_path, "c.bin", binary(words, rows.astype(np.float32))).matrix, whole.matrix)
    lines = text.split(b"\n")
    lines[2499] = b"w2499 1 2 3"
    with pytest.raises(DataError, match=r"d\.txt:2500: expected 4 values after the word, found 3$"):
        read(tmp_path, "d.txt", b"\n".join(lines))


def test_a_header_file_of_short_values_is_text_and_a_binary_one_binary(tmp_path):
    assert read(tmp_path, "short.vec", b"3 2\na 1 2\nb 3 4\nc 5 6\n").words == ["a", "b", "c"]
    rows = np.array([[10.0, 32.0], [1.0, 2.0]], dtype=np.float32)  # 10.0 = bytes 00 00 20 41: a space, then "A"
    assert np.array_equal(read(tmp_path, "odd.bin", binary(["x", "y"], rows)).matrix, rows)


def test_a_word_with_spaces_is_the_fields_before_the_last_dim_values(tmp_path):
    """GloVe 840B has lines such as '. . . 0.1 ...': the values are the last `dim` fields."""
    text = glove(words=["the", ". . .", "new york", ",", "a", "b"])
    assert read(tmp_path, "v.txt", text).words == ["the", ". . .", "new york", ",", "a", "b"]


def test_a_repeated_word_keeps_its_first_vector(tmp_path):
    vectors = read(tmp_path, "v.txt", glove(words=["a", "b", "a", "c", "b", "d"]))
    assert vectors.words == ["a", "b", "c", "d"]
    assert np.array_equal(vectors.matrix, MATRIX[[0, 1, 3, 5]])


def edit(text: bytes, line: int, new: bytes) -> bytes:
    """`text` with its line number `line` (1-based) replaced by `new`."""
    lines = text.split(b"\n")
    lines[line - 1] = new
    return b"\n".join(lines)


MALFORMED = {
    "too few values": (
        "v.txt",
        edit(glove(), 4, b"new 1 2 3"),
        r"v\.txt:4: expected 4 values after the word, found 3$",
    ),
    "one value too many": ("v.txt", edit(glove(), 5, b"york 1 2 3 4 5"), r"v\.txt:5: expected 4 values .*, found 5$"),
    "not a number": ("v.txt", edit(glove(), 6, b"berlin 1 2 0.x 4"), r"v\.txt:6: vector value '0\.x' is not a number$"),
    "in a header file": ("v.vec", edit(header(glove()), 6, b"york 1 2 3"), r"v\.vec:6: expected 4 values .*, found 3$"),
    "header count": ("v.vec", header(glove(), WORDS * 2), r"v\.vec:1: the header announces 12 words, the file has 6$"),
    "word not UTF-8": ("v.txt", glove().replace(b"caf\xc3\xa9", b"caf\xe9"), r"v\.txt:3: the word is not UTF-8"),
    "gz: too few values": ("v.gz", gzip.compress(edit(glove(), 4, b"new 1 2 3")), r"v\.gz:4: expected 4 values"),
    "gz: truncated": ("v.gz", gzip.compress(glove())[:-12], r"v\.gz: cannot be read past byte"),
    "binary: truncated": ("v.bin", binary()[:-10], r"v\.bin: word 6 \(byte [\d,]+\): the file ends inside it"),
    "binary: header count": ("v.bin", binary().replace(b"6 4", b"7 4", 1), r"v\.bin: word 7 \(byte [\d,]+\): the file"),
    "binary: data after": ("v.bin", binary() + b"extra 1234", r"v\.bin: byte [\d,]+: data after the 6 words"),
    "no vectors": ("v.txt", b"", r"v\.txt:1: expected a word and its vector values"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_file_is_one_line_naming_the_file_and_where(tmp_path, case):
    name, content, message = MALFORMED[case]
    with pytest.raises(DataError, match=rf"^{re.escape(str(tmp_path))}/{message}") as caught:
        read(tmp_path, name, content)
    assert "\n" not in str(caught.value)
    assert not any((tmp_path / "cache").glob("*")), "a failed parse leaves nothing in the cache"


def test_a_missing_file_is_named():
    with pytest.raises(DataError, match=r"nowhere\.txt: vectors file not found"):
        read_vectors("nowhere.txt")


# --- the cache -------------------------------------------------------------------------------------------------------


def rewrite_keeping_identity(path: Path, content: bytes) -> None:
    """Other bytes of the same length written into the same inode, the mtime put back: only the content changed."""
    before = path.stat()
    assert len(content) == before.st_size
    with open(path, "r+b") as f:
        f.write(content)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_ino == before.st_ino


def test_the_second_read_maps_the_cache_instead_of_parsing_the_file(tmp_path):
    path, cache = tmp_path / "v.txt", tmp_path / "cache"
    read(tmp_path, "v.txt", glove())
    (entry,) = cache.iterdir()
    assert {p.name for p in entry.iterdir()} == {"matrix.npy", "words.txt", "meta.json"}
    rewrite_keeping_identity(path, glove().replace(b"berlin", b"munich"))
    again = read_vectors(path, cache_dir=cache)
    assert isinstance(again.matrix, np.memmap) and Path(again.matrix.filename).parent == entry
    assert again.words == WORDS, "same size, mtime and inode: served from the cache, the file was not read"


@pytest.mark.parametrize("change", ["mtime", "size"])
def test_a_changed_file_is_parsed_again_and_replaces_its_entry(tmp_path, change):
    path, cache = tmp_path / "v.txt", tmp_path / "cache"
    read(tmp_path, "v.txt", glove())
    if change == "mtime":
        rewrite_keeping_identity(path, glove().replace(b"berlin", b"munich"))
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    else:
        path.write_bytes(glove().replace(b"berlin", b"paris"))
    again = read_vectors(path, cache_dir=cache, note=lambda _: None)
    assert again.words[-1] == ("munich" if change == "mtime" else "paris")
    assert len(list(cache.iterdir())) == 1, "the old entry of the same path is removed"


@pytest.mark.parametrize("damage", ["truncated matrix", "missing words", "garbled meta"])
def test_a_broken_cache_entry_is_rebuilt_with_a_one_line_note(tmp_path, damage):
    path, cache = tmp_path / "v.txt", tmp_path / "cache"
    read(tmp_path, "v.txt", glove())
    (entry,) = cache.iterdir()
    if damage == "truncated matrix":
        os.truncate(entry / "matrix.npy", 140)
    elif damage == "missing words":
        (entry / "words.txt").unlink()
    else:
        (entry / "meta.json").write_text("{not json")
    notes = []
    vectors = read_vectors(path, cache_dir=cache, note=notes.append)
    assert vectors.words == WORDS and np.array_equal(vectors.matrix, MATRIX)
    assert len(notes) == 2 and "unreadable" in notes[0] and "rebuilding" in notes[0] and "\n" not in notes[0]
    assert read_vectors(path, cache_dir=cache, note=notes.append).words == WORDS and len(notes) == 2


def test_a_second_writer_of_the_same_entry_leaves_one_whole_entry(tmp_path):
    """Two runs parsing the same file at once: the second rename finds the first's entry and keeps it."""
    path, cache = tmp_path / "v.txt", tmp_path / "cache"
    path.write_bytes(glove())
    entry = cache / vectors_module._entry_name(path)
    vectors_module._build_entry(path, cache, entry)
    vectors_module._build_entry(path, cache, entry)
    assert [p.name for p in cache.iterdir()] == [entry.name]
    assert read_vectors(path, cache_dir=cache).words == WORDS


def test_a_temporary_folder_left_by_a_killed_run_is_removed_once_stale(tmp_path):
    cache = tmp_path / "cache"
    stale, fresh = cache / ".tmp-killed", cache / ".tmp-running"
    for folder in (stale, fresh):
        folder.mkdir(parents=True)
        (folder / "matrix.npy").write_bytes(b"\0" * 128)
    for p in (stale / "matrix.npy", stale):
        os.utime(p, (0, 0))
    read(tmp_path, "v.txt", glove())
    assert not stale.exists() and fresh.exists()


def test_without_a_cache_nothing_is_written_and_the_matrix_is_in_memory(tmp_path):
    vectors = read(tmp_path, "v.txt", glove(), cache_dir=None)
    assert not isinstance(vectors.matrix, np.memmap) and np.array_equal(vectors.matrix, MATRIX)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.txt"]


# --- keeping some of the vectors -------------------------------------------------------------------------------------

TRAIN = [["Berlin", "is", "the", "capital"]]


@pytest.mark.parametrize(("keep", "extra"), [("all", [",", "café", "new", "york"]), (3, [",", "café"]), ("train", [])])
def test_keep_takes_the_training_words_plus_the_files_first_k(tmp_path, keep, extra):
    vectors = read(tmp_path, "v.txt", glove())
    vocab, trainable = build_word_vocab(TRAIN, vectors, EmbeddingsConfig(keep=keep))
    assert vocab.itos[:trainable] == ["<pad>", "<unk>", "berlin", "capital", "is", "the"]
    assert vocab.itos[trainable:] == extra
    matrix, stats = init_embeddings(vocab, vectors, vectors.dim, seed=1)
    for word in ("berlin", "the", *extra):
        assert np.array_equal(matrix[vocab.stoi[word]], MATRIX[WORDS.index(word)])
    assert stats["pretrained"] == 2 + len(extra) and stats["vectors_kept"] == len(vocab)


def test_keep_accepts_all_train_or_a_count_and_nothing_else():
    assert EmbeddingsConfig(keep="500").keep == 500
    for bad in ("most", -1):
        with pytest.raises(ConfigError, match=r"^model\.embeddings\.keep="):
            EmbeddingsConfig(keep=bad)


def test_a_model_trained_with_trimmed_vectors_saves_loads_and_tags(tmp_path):
    from ner.model.engine import Engine
    from ner.tracking import model_uri
    from ner.training.pipeline import train

    fixture = Path(__file__).parent / "fixtures" / "vectors.txt"
    all_words = len(fixture.read_text(encoding="utf-8").splitlines())
    cfg = compose_train(
        tmp_path,
        f"model.embeddings.path={fixture}",
        "model.embeddings.keep=3",
        f"model.embeddings.cache_dir={tmp_path / 'vectors-cache'}",
    )
    metrics = train(cfg)
    tagger = model_uri.load(f"runs:/{metrics['run_id']}/model", f"sqlite:///{tmp_path / 'mlflow.db'}")
    trainable = tagger.word_embed.num_embeddings
    assert len(tagger.featurizer.words) <= trainable + 3 < trainable + all_words
    assert len(tagger.frozen_words) == len(tagger.featurizer.words) - trainable
    (tags,) = Engine(tagger).predict([["Angela", "visited", "Africa", "."]])
    assert len(tags) == 4


def test_random_rows_are_the_ones_a_single_draw_of_the_whole_matrix_gives(tmp_path):
    """Drawn in blocks and only where needed, yet the same numbers as before: a seed keeps meaning one model."""
    vectors = read(tmp_path, "v.txt", glove())
    for vecs in (None, vectors):
        vocab, _ = build_word_vocab(TRAIN, vecs, EmbeddingsConfig(keep="all"))
        matrix, _ = init_embeddings(vocab, vecs, 4, seed=7)
        scale = np.sqrt(3.0 / 4)
        whole = np.random.default_rng(7).uniform(-scale, scale, size=(len(vocab), 4)).astype(np.float32)
        random_rows = [i for i, w in enumerate(vocab.itos) if w not in WORDS][1:]  # <pad> (row 0) is zero
        assert np.array_equal(matrix[random_rows], whole[random_rows]) and not matrix[0].any()
