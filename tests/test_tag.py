"""Bulk tagging end to end: every input and output format, count in = count out, exact offsets, atomic output,
resume, clear errors, and the fast annotator against a plain reference path (per-sentence decode + one record
built at a time)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tracemalloc

import pytest
import torch

from ner.data import schemes
from ner.data.conll import read_conll
from ner.data.tokenize import sentences as split_sentences
from ner.evaluation import metrics
from ner.model.engine import Engine
from ner.model.tagger import Tagger
from ner.tagging.annotate import Annotator
from ner.tagging.files import TagError
from ner.tagging.pipeline import TagConfig
from ner.tracking.model_uri import load_folder
from tests.conftest import ROOT, TINY
from tests.tag_fixtures import (
    MESSY_LINES,
    assert_offsets_exact,
    read_jsonl,
    run_tag,
    tag_config,
    tiny_model_dir,  # noqa: F401 (fixture)
)
from tests.test_engine import reference_tags

LONG_LINE = " ".join(["Peter visited Paris on Monday ,"] * 3334)  # ~20,000 tokens on one line


@pytest.fixture
def messy_file(tmp_path):
    """One document per line: empty and blank lines, a 20,000-token line, CRLF, a BOM, no final newline."""
    lines = [*MESSY_LINES[:3], LONG_LINE, *MESSY_LINES[3:]]
    raw = "\ufeff" + "\r\n".join(lines[:2]) + "\r\n" + "\n".join(lines[2:])
    path = tmp_path / "messy.txt"
    path.write_bytes(raw.encode("utf-8"))
    return path, lines


def test_config_file_and_dataclass_agree():
    """conf/tag/tag.yaml and TagConfig have the same knobs with the same defaults, and each knob has a comment."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from ner.tagging.spark import SparkSettings

    with initialize_config_dir(config_dir=str(ROOT / "conf" / "tag"), version_base="1.3"):
        composed = OmegaConf.to_container(compose(config_name="tag"), resolve=True)
    fields = {f.name: f for f in dataclasses.fields(TagConfig)}
    assert set(fields) == set(composed)
    defaults = {
        name: f.default_factory() if f.default is dataclasses.MISSING else f.default for name, f in fields.items()
    }
    # spark: {} in the dataclass means SparkSettings' defaults, which the file spells out
    assert defaults.pop("spark") == {} and composed.pop("spark") == dataclasses.asdict(SparkSettings())
    differ = {k: (composed[k], defaults[k]) for k in defaults if composed[k] != defaults[k]}
    assert not differ, f"tag.yaml vs TagConfig defaults (yaml, dataclass): {differ}"
    assert tag_config(input="x", output="y").input == "x"  # the composed file builds a TagConfig
    for line in (ROOT / "conf" / "tag" / "tag.yaml").read_text().splitlines():
        if line and not line.startswith((" ", "#", "hydra:", "defaults:", "-")):
            assert "  # " in line, f"knob without a comment: {line}"


def test_one_document_per_line_is_lossless(tiny_model_dir, messy_file, tmp_path):  # noqa: F811
    path, lines = messy_file
    out = tmp_path / "out.jsonl"
    summary = run_tag(model=tiny_model_dir, input=path, output=out, one_per_line=True, chunk_docs=3)
    records = read_jsonl(out)
    assert len(out.read_text(encoding="utf-8").splitlines()) == len(lines)  # U+2028, U+0085 are escaped
    assert [(r["source"], r["doc"]) for r in records] == [(str(path), i) for i in range(len(lines))]
    assert [r["text"] for r in records] == lines
    assert summary["documents"] == len(lines) and summary["tokens"] > 20_000
    for record in records:
        assert_offsets_exact(record)
    assert records[1] == {"source": str(path), "doc": 1, "text": "", "sentences": [], "entities": []}
    assert records[6]["sentences"] == [] and records[6]["entities"] == []  # blank line: empty, but present
    long_sentences = records[3]["sentences"]
    assert sum(len(s["tokens"]) for s in long_sentences) == len(split_sentences(LONG_LINE)[0])
    found = {(r["doc"], e["text"], e["type"]) for r in records for e in r["entities"]}
    assert {(0, "Angela Merkel", "PER"), (0, "Paris", "LOC")} <= found
    assert sum(e["text"] == "Paris" for r in records[3:4] for e in r["entities"]) > 3000


def test_folder_input_one_document_per_file_binary_skipped(tiny_model_dir, tmp_path):  # noqa: F811
    src = tmp_path / "news"
    (src / "sub").mkdir(parents=True)
    (src / "b.txt").write_text("Peter visited Paris .\n\nAngela Merkel left .\n", encoding="utf-8")
    (src / "a.txt").write_text("", encoding="utf-8")
    (src / "sub" / "c.md").write_text("Boris\tvisited Germany 😀", encoding="utf-8")
    (src / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (src / ".hidden").write_text("Peter", encoding="utf-8")
    summary = run_tag(model=tiny_model_dir, input=src, output=tmp_path / "all.jsonl")
    records = read_jsonl(tmp_path / "all.jsonl")
    assert [r["source"] for r in records] == [str(src / "a.txt"), str(src / "b.txt"), str(src / "sub" / "c.md")]
    assert records[0]["text"] == "" and records[1]["text"].endswith("left .\n")
    assert summary["binary_files_skipped"] == 1 and summary["files"] == 3 and summary["documents"] == 3
    for record in records:
        assert_offsets_exact(record)

    run_tag(model=tiny_model_dir, input=src, output=f"{tmp_path / 'per-file'}/", output_format="conll")
    made = sorted(p.relative_to(tmp_path / "per-file").as_posix() for p in (tmp_path / "per-file").rglob("*"))
    assert made == ["a.txt.conll", "b.txt.conll", "sub", "sub/c.md.conll"]
    assert (tmp_path / "per-file" / "a.txt.conll").read_text() == "-DOCSTART-\tO\n\n"  # empty, still there


def test_glob_input_and_the_three_output_formats_agree(tiny_model_dir, tmp_path):  # noqa: F811
    for i, text in enumerate(["Peter visited Paris .", "Shares of Apple rose .\tBoris left Reuters .", ""]):
        (tmp_path / f"doc{i}.txt").write_text(text, encoding="utf-8")
    (tmp_path / "notes.md").write_text("Peter", encoding="utf-8")
    outputs = {}
    for fmt in ("jsonl", "conll", "spans"):
        outputs[fmt] = tmp_path / f"out.{fmt}"
        run_tag(model=tiny_model_dir, input=str(tmp_path / "doc*.txt"), output=outputs[fmt], output_format=fmt)
    records = read_jsonl(outputs["jsonl"])
    assert len(records) == 3
    conll_docs = outputs["conll"].read_text(encoding="utf-8").split("-DOCSTART-\tO\n\n")[1:]
    assert len(conll_docs) == 3
    for record, block in zip(records, conll_docs, strict=True):
        rows = [line.split("\t") for line in block.split("\n") if line]
        assert rows == [[t, g] for s in record["sentences"] for t, g in zip(s["tokens"], s["tags"], strict=True)]
    span_rows = outputs["spans"].read_text(encoding="utf-8").splitlines()
    assert span_rows[0] == "source\tdoc\tstart\tend\ttype\ttext"
    expected = [
        f"{r['source']}\t{r['doc']}\t{e['start']}\t{e['end']}\t{e['type']}\t{e['text']}"
        for r in records
        for e in r["entities"]
    ]
    assert span_rows[1:] == expected and expected


def test_spans_escape_tabs_and_newlines_inside_entities(tmp_path):
    from ner.tagging.files import Document, serialise

    doc = Document(0, "a\tb.txt", 0, 0, text="x")
    record = {"entities": [{"text": "New\tYork\\", "type": "LOC", "start": 0, "end": 9}]}
    assert serialise("spans", doc, record) == "a\\tb.txt\t0\t0\t9\tLOC\tNew\\tYork\\\\\n"


def test_conll_input_is_scored_like_training_evaluation(tiny_model_dir, tmp_path):  # noqa: F811
    conll = {"model": tiny_model_dir, "input": TINY / "test.txt", "input_format": "conll"}
    summary = run_tag(**conll, output=tmp_path / "o.conll", output_format="conll")
    sentences = read_conll(TINY / "test.txt")
    gold = [schemes.convert(s.tags, "iob2") for s in sentences]
    tagger = load_folder(tiny_model_dir)
    pred = Engine(tagger).predict([s.tokens for s in sentences])
    expected = metrics.score(gold, pred)
    assert summary["scores"] == pytest.approx({k: v for k, v in expected.items() if k in summary["scores"]})
    assert set(summary["scores"]) >= {"precision", "recall", "f1", "f1_strict", "f1_PER", "f1_LOC"}
    rows = [line.split("\t") for line in (tmp_path / "o.conll").read_text().splitlines() if line]
    assert rows[0] == ["-DOCSTART-", "O", "O"]
    assert rows[1:] == [
        [t, g, p]
        for s, gs, ps in zip(sentences, gold, pred, strict=True)
        for t, g, p in zip(s.tokens, gs, ps, strict=True)
    ]

    run_tag(**conll, output=tmp_path / "o.jsonl")
    (record,) = read_jsonl(tmp_path / "o.jsonl")
    assert_offsets_exact(record)
    assert [s["tokens"] for s in record["sentences"]] == [s.tokens for s in sentences]
    assert [s["gold"] for s in record["sentences"]] == gold


def test_conll_documents_follow_docstart_lines(tiny_model_dir, tmp_path):  # noqa: F811
    path = tmp_path / "in.conll"
    path.write_text("Peter\nleft\n\n-DOCSTART-\n\n-DOCSTART-\nParis\n\nBoris\n", encoding="utf-8")
    summary = run_tag(model=tiny_model_dir, input=path, input_format="conll", output=tmp_path / "o.jsonl")
    records = read_jsonl(tmp_path / "o.jsonl")
    assert [[s["tokens"] for s in r["sentences"]] for r in records] == [[["Peter", "left"]], [], [["Paris"], ["Boris"]]]
    assert "scores" not in summary  # one column: no gold tags, nothing to score


def test_conll_input_is_parsed_as_training_parses_it(tmp_path):
    """One parser (`ner.data.conll.parse`): the tagging reader streams the sentences `read_conll` reads, in
    documents at the -DOCSTART- lines; its problems are one-line TagErrors naming the file and line."""
    from ner.tagging.files import Reader, plan

    path = tmp_path / "in.conll"
    path.write_bytes(b"\xef\xbb\xbf-DOCSTART- O\r\n\r\nEU\tB-ORG\r\nrejects   O\r\n\r\n-DOCSTART- O\n")
    with open(path, "ab") as f:
        f.write(b"Peter S-PER\n\nBonn B-LOC")  # no final newline
    work = plan(str(path), str(tmp_path / "o.jsonl"), "jsonl", False, {})
    docs = list(Reader("conll").documents(work.targets))
    sentences = read_conll(path)
    assert [s for d in docs for s in d.sentences] == [s.tokens for s in sentences]
    assert [g for d in docs for g in d.gold] == [schemes.convert(s.tags, "iob2") for s in sentences]
    assert [len(d.sentences) for d in docs] == [1, 2] and sum(d.size for d in docs) == path.stat().st_size
    path.write_bytes(b"EU B-ORG\nrejects O\n\nPeter PER\n")
    with pytest.raises(TagError, match=rf"^{path}:4: tag 'PER' is not O or B-/I-/E-/S-<TYPE> in the last column$"):
        list(Reader("conll").documents(work.targets))
    path.write_bytes(b"EU B-ORG\nrejects\n")
    with pytest.raises(TagError, match=rf"^{path}:2: expected 2 columns like the first token line, found 1$"):
        list(Reader("conll").documents(work.targets))


def test_invalid_utf8_names_file_and_byte_offset_or_is_replaced(tiny_model_dir, tmp_path):  # noqa: F811
    path = tmp_path / "bad.txt"
    path.write_bytes(b"Peter left .\nbad \xff byte\nParis .\n")
    with pytest.raises(TagError, match=rf"{path}: invalid UTF-8 at byte offset 17 \(line 2\)"):
        run_tag(model=tiny_model_dir, input=path, output=tmp_path / "o.jsonl", one_per_line=True)
    assert not (tmp_path / "o.jsonl").exists()
    summary = run_tag(
        model=tiny_model_dir, input=path, output=tmp_path / "o.jsonl", one_per_line=True, on_decode_error="replace"
    )
    assert [r["text"] for r in read_jsonl(tmp_path / "o.jsonl")] == ["Peter left .", "bad \ufffd byte", "Paris ."]
    assert summary["decode_errors_replaced"] == 1
    with pytest.raises(TagError, match=rf"{path}: invalid UTF-8 at byte offset 17 \(line 2\)"):
        run_tag(model=tiny_model_dir, input=path, output=tmp_path / "whole.jsonl")


def test_an_interrupted_run_leaves_no_output_and_resumes_to_the_same_bytes(tiny_model_dir, tmp_path):  # noqa: F811
    lines = [f"Peter visited Paris {i} times ." for i in range(7)]
    path = tmp_path / "in.txt"
    path.write_bytes(("\n".join(lines[:4]) + "\nbad \xff\n" + "\n".join(lines[5:]) + "\n").encode("latin-1"))
    out, partial = tmp_path / "out.jsonl", tmp_path / "out.jsonl.partial"
    args = {"model": tiny_model_dir, "input": path, "output": out, "one_per_line": True, "chunk_docs": 2}
    with pytest.raises(TagError, match="byte offset"):
        run_tag(**args)  # fails while reading the third chunk
    assert not out.exists() and partial.exists()
    assert [r["doc"] for r in read_jsonl(partial)] == [0, 1, 2, 3]
    with open(partial, "ab") as f:
        f.write(b'{"source": "torn rec')  # as if killed in the middle of a write

    resumed = run_tag(**args, resume=True, on_decode_error="replace")
    assert (resumed["documents_resumed"], resumed["documents"]) == (4, 3)
    assert not partial.exists() and not (tmp_path / "out.jsonl.progress.json").exists()
    run_tag(**{**args, "output": tmp_path / "fresh.jsonl"}, on_decode_error="replace")
    assert out.read_bytes() == (tmp_path / "fresh.jsonl").read_bytes()

    again = run_tag(**{**args, "model": "/not/needed"}, resume=True)  # complete: nothing to do, no model loaded
    assert again["outputs_already_complete"] == 1 and again["documents"] == 0


def test_resume_refuses_other_settings_or_other_input(tiny_model_dir, tmp_path):  # noqa: F811
    path = tmp_path / "in.txt"
    path.write_text("Peter .\nParis .\nbad \udcff\n", encoding="utf-8", errors="surrogateescape")
    args = {"model": tiny_model_dir, "input": path, "output": tmp_path / "o.jsonl", "one_per_line": True}
    with pytest.raises(TagError):
        run_tag(**args, chunk_docs=1)
    with pytest.raises(TagError, match="other settings .*max_sentence_tokens=250->9"):
        run_tag(**args, resume=True, max_sentence_tokens=9)
    other = tmp_path / "other.txt"
    other.write_text("Boris .\nBoris .\nBoris .\n", encoding="utf-8")
    with pytest.raises(TagError, match="resume: .*o.jsonl.partial was made from input file 1 .*in.txt, but input "
                       "file 1 now is .*other.txt"):  # fmt: skip
        run_tag(**{**args, "input": other, "model": "/not/loaded"}, resume=True)  # found before the model loads
    fresh = run_tag(**args, on_decode_error="replace")  # resume=false starts over
    assert fresh["documents"] == 3 and fresh["documents_resumed"] == 0


def test_worker_processes_write_the_same_bytes_and_stop_cleanly(tiny_model_dir, messy_file, tmp_path):  # noqa: F811
    path, lines = messy_file
    args = {"model": tiny_model_dir, "input": path, "one_per_line": True, "chunk_docs": 2, "chunk_chars": 1000}
    run_tag(**args, output=tmp_path / "serial.jsonl")
    summary = run_tag(**args, output=tmp_path / "pool.jsonl", workers=2)
    assert (tmp_path / "pool.jsonl").read_bytes() == (tmp_path / "serial.jsonl").read_bytes()
    assert summary["documents"] == len(lines) and summary["stage_seconds"]["wait"] > 0  # the pool did the tagging

    bad = tmp_path / "bad.txt"
    bad.write_bytes(path.read_bytes() + b"\nbad \xff\n")
    with pytest.raises(TagError, match="byte offset"):
        run_tag(**{**args, "input": bad}, output=tmp_path / "o.jsonl", workers=1)
    assert not (tmp_path / "o.jsonl").exists()
    assert len(read_jsonl(tmp_path / "o.jsonl.partial")) >= len(lines) - 3  # all but the chunks in flight


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"input": "/no/such/file.txt"}, "no such file or folder"),
        ({"input": "/no/such/*.txt"}, "no file matches"),
        ({"output_format": "xml"}, "output_format='xml' is not one of"),
        ({"input_format": "pdf"}, "input_format='pdf' is not one of"),
        ({"output": None}, "output= is required"),
    ],
)
def test_user_errors_are_tag_errors(tiny_model_dir, tmp_path, overrides, message):  # noqa: F811
    (tmp_path / "in.txt").write_text("Peter .", encoding="utf-8")
    args = {"model": tiny_model_dir, "input": tmp_path / "in.txt", "output": tmp_path / "o.jsonl", **overrides}
    with pytest.raises(TagError, match=message):
        run_tag(**{k: v for k, v in args.items() if v is not None})


def test_a_100000_token_sentence_is_tagged_in_bounded_pieces_losing_nothing(tiny_model_dir, tmp_path):  # noqa: F811
    words = ("Peter visited Paris on Monday ,".split() * 16_667)[:100_000]
    (tmp_path / "long.txt").write_text(" ".join(words), encoding="utf-8")
    run_tag(model=tiny_model_dir, input=tmp_path / "long.txt", output=tmp_path / "o.jsonl", progress=False)
    (record,) = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [t for s in record["sentences"] for t in s["tokens"]] == words
    assert max(len(s["tokens"]) for s in record["sentences"]) <= 250  # max_sentence_tokens
    assert_offsets_exact(record)


def test_a_document_over_max_document_mb_is_refused_before_it_is_read(tiny_model_dir, tmp_path):  # noqa: F811
    limit = 1000 / 2**20  # max_document_mb: 1,000 bytes
    big, lines = tmp_path / "big.txt", tmp_path / "lines.txt"
    big.write_text("Peter visited Paris .\n" * 100, encoding="utf-8")  # 2,200 bytes
    lines.write_text("a" * 1000 + "\n" + "Peter left .\n" + "b" * 1001 + "\n", encoding="utf-8")
    common = {"model": tiny_model_dir, "max_document_mb": limit, "progress": False}
    with pytest.raises(TagError, match=r"big.txt: 2,200 bytes is too big for one document .*one_per_line=true"):
        run_tag(input=big, output=tmp_path / "o1.jsonl", **common)
    run_tag(input=big, output=tmp_path / "o2.jsonl", one_per_line=True, **common)  # streamed: fine
    assert len((tmp_path / "o2.jsonl").read_text().splitlines()) == 100
    with pytest.raises(TagError, match=r"lines.txt:3: the line is longer than max_document_mb"):
        run_tag(input=lines, output=tmp_path / "o3.jsonl", one_per_line=True, **common)  # line 1: exactly 1,000
    assert not (tmp_path / "o3.jsonl").exists()


def test_cli_tags_a_file_and_fails_in_one_line(tiny_model_dir, tmp_path):  # noqa: F811
    (tmp_path / "in.txt").write_text("Angela Merkel visited Paris .\n", encoding="utf-8")
    ok = subprocess.run(
        [sys.executable, "-m", "ner.tag", f"model={tiny_model_dir}", f"input={tmp_path / 'in.txt'}",
         f"output={tmp_path / 'o.jsonl'}", "threads=1", "progress=false"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "tagged 1 documents" in ok.stdout and len(read_jsonl(tmp_path / "o.jsonl")) == 1
    assert not (tmp_path / "outputs").exists()  # no Hydra run folder for a tagging run
    bad = subprocess.run(
        [sys.executable, "-m", "ner.tag", "model=/no/such/model", f"input={tmp_path / 'in.txt'}", "output=o.jsonl"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "error: model '/no/such/model' is neither an existing folder nor a runs:/, models:/ or best: URI"
        " (a run's model is runs:/<run_id>/model; list runs with `mlflow ui`)"
    ]


def test_memory_stays_flat_as_the_input_grows(tiny_model_dir, tmp_path):  # noqa: F811
    """Peak Python memory with 8x the documents stays about the same: nothing accumulates across chunks."""
    peaks = []
    for n in (500, 4000):
        path = tmp_path / f"in{n}.txt"
        path.write_text("Peter visited Paris on Monday .\n" * n, encoding="utf-8")
        tracemalloc.start()
        run_tag(model=tiny_model_dir, input=path, output=tmp_path / f"o{n}.jsonl", one_per_line=True, chunk_docs=250)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 1.5 * peaks[0]


# ------------------------------------------------------------------------------------ the fast annotator


def _reference(tagger: Tagger, texts: list[str]) -> list[dict]:
    """The straightforward path: tokenise, decode each sentence alone, build each record on its own."""
    split = [split_sentences(text, 250) for text in texts]
    flat = [[t.text for t in sent] for doc in split for sent in doc]
    documents = [d for d, doc in enumerate(split) for _ in doc]
    tags = iter(reference_tags(tagger, flat, documents))
    return [_document(text, doc, [next(tags) for _ in doc]) for text, doc in zip(texts, split, strict=True)]


def _document(text: str, sentences: list, tags: list[list[str]]) -> dict:
    """One document's record, sentence by sentence, with `schemes.spans` for the entities."""
    out_sentences, entities = [], []
    for sent, seq in zip(sentences, tags, strict=True):
        offsets = [[t.start, t.end] for t in sent]
        out_sentences.append(
            {"start": sent[0].start, "end": sent[-1].end, "tokens": [t.text for t in sent], "offsets": offsets,
             "tags": seq}  # fmt: skip
        )
        for first, last, typ in schemes.spans(seq):
            start, end = sent[first].start, sent[last - 1].end
            entities.append({"text": text[start:end], "type": typ, "start": start, "end": end})
    return {"text": text, "sentences": out_sentences, "entities": entities}


def test_annotator_equals_the_reference_path_for_the_trained_model(tiny_model_dir):  # noqa: F811
    tagger = load_folder(tiny_model_dir)
    texts = [*MESSY_LINES, LONG_LINE[:5000], "Peter visited Paris . " * 40]
    annotator = Annotator(tagger, batch_size=7, max_tokens=300, scores=False)  # the reference path has no scores
    records = annotator.annotate(texts)
    assert records == _reference(tagger, texts)
    assert sum(len(r["entities"]) for r in records) > 10
    sentences = [s["tokens"] for r in records for s in r["sentences"]]
    assert annotator.tag_tokens([*sentences, []]) == [*reference_tags(tagger, sentences), []]
    bf16 = Annotator(tagger, precision="bf16").annotate(texts)
    for record in bf16:
        assert_offsets_exact(record)
    with pytest.raises(ValueError, match="precision"):
        Annotator(tagger, precision="int3")


def test_auto_precision_takes_bf16_only_on_a_cpu_with_native_bfloat16():
    from ner.model.engine import resolve_precision

    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    assert resolve_precision("auto", "cuda:0") == "fp32"
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"


def test_annotate_tokens_builds_a_text_that_the_offsets_slice(tiny_model_dir):  # noqa: F811
    annotator = Annotator(load_folder(tiny_model_dir))
    docs = [[["Angela", "Merkel", "visited", "Paris", "."], [], ["Peter", "left", "."]], []]
    first, empty = annotator.annotate_tokens(docs)
    assert first["text"] == "Angela Merkel visited Paris .\nPeter left ."
    assert_offsets_exact(first)
    assert {e["text"] for e in first["entities"]} >= {"Angela Merkel", "Paris"}
    assert empty == {"text": "", "sentences": [], "entities": []}


def test_stage_timings_are_recorded(tiny_model_dir, tmp_path):  # noqa: F811
    (tmp_path / "in.txt").write_text("Peter visited Paris .\n" * 50, encoding="utf-8")
    summary = run_tag(model=tiny_model_dir, input=tmp_path / "in.txt", output=tmp_path / "o.jsonl", one_per_line=True)
    stages = {"load", "read", "tokenise", "features", "model", "decode", "scores", "records", "write"}
    assert set(summary["stage_seconds"]) == stages
    assert summary["tokens"] == 200 and json.dumps(summary)
