"""`engine=spark` on a real Spark in local[2]: every document comes back exactly once, with the records (and so the
entities) of `engine=local`; bad documents are reported, not fatal; the output folder is complete or absent.

Skips, saying why, without PySpark (`pip install -c constraints.txt -e ".[spark]"`) or Java 17+.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pyarrow as pa
import pytest

from ner.tagging import spark as spark_engine
from ner.tagging.files import TagError
from tests.tag_fixtures import (
    MESSY_LINES,
    assert_offsets_exact,
    read_jsonl,
    run_tag,
    tiny_model_dir,  # noqa: F401 (fixture)
)

pytestmark = pytest.mark.slow
MASTER = "local[2]"
NAMES = ["Peter", "Angela Merkel", "Boris", "Mary Ann Lee", "Reuters", "Apple"]
PLACES = ["Paris", "Germany", "New York", "South Africa", "東京", "Москва"]
EXTRA = ["", "😀 🇩🇪 👨‍👩‍👧", "Peter 👍🏽 visited Paris", "مرحبا Germany", "   "]


def _java_reason() -> str | None:
    """Why Spark cannot start here (no Java 17+), or None."""
    hint = "engine=spark needs Java 17+ (Debian: apt-get install openjdk-17-jre-headless)"
    java = shutil.which("java")
    if java is None:
        return f"no `java` on PATH: {hint}"
    proc = subprocess.run([java, "-version"], capture_output=True, text=True)
    found = re.search(r'version "(\d+)', proc.stderr)
    if proc.returncode or not found:
        return f"`java -version` failed ({proc.stderr.strip()[:200]}): {hint}"
    return None if int(found.group(1)) >= 17 else f"Java {found.group(1)} found: {hint}"


@pytest.fixture(scope="module")
def spark():
    """One local[2] session for the module (no UI port, few shuffle partitions); `ner.spark.tag` reuses it."""
    pytest.importorskip("pyspark", reason='PySpark is not installed: pip install -c constraints.txt -e ".[spark]"')
    reason = _java_reason()
    if reason:
        pytest.skip(reason)
    from ner.tagging.spark import SparkSettings, session

    conf = {"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "4"}
    spark, _ = session(SparkSettings(master=MASTER, conf=conf))
    yield spark
    spark.stop()


def run_spark(**overrides) -> dict:
    return run_tag(engine="spark", **{"spark.master": MASTER}, **overrides)


def spark_lines(folder) -> list[str]:
    """The JSON lines of every part file, sorted by (source, doc): the input order."""
    lines = [line for p in folder.glob("part-*.jsonl") for line in p.read_text(encoding="utf-8").split("\n") if line]
    return sorted(lines, key=lambda line: (json.loads(line)["source"], json.loads(line)["doc"]))


def documents(count: int) -> list[str]:
    """`count` documents: the messy lines (control characters, emoji, RTL, CJK), empty ones, and news-like text."""
    docs = [*MESSY_LINES, *EXTRA]
    i = 0
    while len(docs) < count:
        name, place = NAMES[i % len(NAMES)], PLACES[(i * 5) % len(PLACES)]
        docs.append(f"{name} visited {place} on day {i} . {NAMES[(i + 1) % len(NAMES)]} said {i % 7} words .")
        i += 1
    return docs


def test_spark_gives_every_document_once_with_the_local_records(spark, tiny_model_dir, tmp_path, monkeypatch):  # noqa: F811
    docs = documents(300)
    docs.insert(150, " ".join(["Peter visited Paris on Monday ,"] * 3000))  # 18,000 tokens on one line
    path = tmp_path / "news.txt"
    path.write_text("\n".join(docs), encoding="utf-8")
    common = {"model": tiny_model_dir, "input": path, "one_per_line": True}
    local = run_tag(**common, output=tmp_path / "local.jsonl", workers=0)
    monkeypatch.setattr(spark_engine, "MIN_RANGE_BYTES", 1)  # the file is cut into 6 byte ranges, mid-line
    monkeypatch.setattr(spark_engine, "COUNT_ON_DRIVER", 0)  # and Spark counts their line ends
    summary = run_spark(**common, output=tmp_path / "out")

    out = tmp_path / "out"
    assert (out / "_SUCCESS").is_file() and not list(tmp_path.glob("out.*"))  # no tmp-/old- folders left
    lines = spark_lines(out)
    records = [json.loads(line) for line in lines]
    assert [(r["source"], r["doc"]) for r in records] == [(str(path), i) for i in range(len(docs))]  # each once
    assert lines == (tmp_path / "local.jsonl").read_text(encoding="utf-8").splitlines()  # the same bytes
    local_entities = [
        [(e["type"], e["start"], e["end"], e["text"]) for e in r["entities"]]
        for r in read_jsonl(tmp_path / "local.jsonl")
    ]
    assert [[(e["type"], e["start"], e["end"], e["text"]) for e in r["entities"]] for r in records] == local_entities
    for key in ("documents", "sentences", "tokens", "entities"):
        assert summary[key] == local[key], key
    assert summary["errors"] == 0 and summary["entities"] > 300 and summary["tokens"] > 18_000
    assert 1 <= summary["model_loads"] <= 2  # once per Python worker, not per task (6 tasks) or per batch
    for record in records:
        assert_offsets_exact(record)


@pytest.mark.parametrize("wanted", [1, 2, 3, 7, 40])
def test_byte_ranges_give_each_line_once_with_its_local_index(tmp_path, monkeypatch, wanted):
    """No Spark needed: the ranges of `ner.tagging.spark` tile the files, and their documents are the Reader's."""
    from ner.tagging.files import Reader, plan

    monkeypatch.setattr(spark_engine, "MIN_RANGE_BYTES", 1)
    contents = {
        "a.txt": "\ufeffPeter\r\n\r\nvisited Paris .\nlong " + "x" * 300 + "\n\nlast line, no newline",
        "b.txt": "one\n",
        "c.txt": "",
        "d.txt": "\n\n\n",
    }
    for name, text in contents.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    files, _ = spark_engine._local_files(str(tmp_path), str(tmp_path / "out"))
    groups = spark_engine._ranges(None, files, True, wanted)
    assert len(groups) >= min(wanted, 4) - 1
    batches = [pa.RecordBatch.from_pydict({"id": list(range(len(groups)))})]
    got = list(spark_engine._range_documents(groups, "text", True, "error", "text", batches))
    work = plan(str(tmp_path), str(tmp_path / "out"), "jsonl", False, {})
    expected = list(Reader(one_per_line=True).documents(work.targets))
    assert [(d.source, d.index, d.text) for d in got] == [(d.source, d.index, d.text) for d in expected]


def test_bad_documents_are_reported_and_long_ones_chunked(spark, tiny_model_dir, tmp_path):  # noqa: F811
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.txt").write_text("Peter visited Paris .\nAngela Merkel left .\n", encoding="utf-8")
    (src / "bad.txt").write_bytes(b"Boris left .\nbad \xff byte Paris\n")
    long_line = " ".join(("Peter visited Paris on Monday ,".split() * 16_667)[:100_000])  # 100,000 tokens
    (src / "long.txt").write_text(long_line, encoding="utf-8")
    summary = run_spark(model=tiny_model_dir, input=src, output=tmp_path / "out", one_per_line=True)
    records = {(r["source"].rsplit("/", 1)[1], r["doc"]): r for r in map(json.loads, spark_lines(tmp_path / "out"))}
    assert sorted(records) == [("a.txt", 0), ("a.txt", 1), ("bad.txt", 0), ("bad.txt", 1), ("long.txt", 0)]
    bad = records[("bad.txt", 1)]
    assert bad["entities"] == [] and bad["text"] == "bad \ufffd byte Paris"
    assert "invalid UTF-8 at byte offset 17 (line 2)" in bad["error"]
    assert "error" not in records[("bad.txt", 0)] and records[("bad.txt", 0)]["entities"]
    long = records[("long.txt", 0)]["sentences"]
    assert sum(len(s["tokens"]) for s in long) == 100_000 and max(len(s["tokens"]) for s in long) <= 250
    assert (summary["documents"], summary["errors"], summary["files"]) == (5, 1, 3)

    replaced = run_spark(
        model=tiny_model_dir, input=src / "bad.txt", output=tmp_path / "r", one_per_line=True, on_decode_error="replace"
    )
    assert (replaced["errors"], replaced["decode_errors_replaced"]) == (0, 1)


def test_jsonl_and_parquet_inputs_and_parquet_output(spark, tiny_model_dir, tmp_path):  # noqa: F811
    pq = pytest.importorskip("pyarrow.parquet")
    texts = documents(40)
    lake = tmp_path / "lake"
    lake.mkdir()
    rows = [json.dumps({"id": i, "body": t}, ensure_ascii=False) for i, t in enumerate(texts)]
    (lake / "a.jsonl").write_text("\n".join([*rows, "{not json", '{"id": 1}']) + "\n", encoding="utf-8")
    summary = run_spark(
        model=tiny_model_dir, input=lake, output=tmp_path / "j", input_format="jsonl", text_column="body"
    )
    records = [json.loads(line) for line in spark_lines(tmp_path / "j")]
    assert [r["doc"] for r in records] == list(range(len(texts) + 2))
    assert [r["text"] for r in records[: len(texts)]] == texts
    assert "not JSON" in records[-2]["error"] and "'body'" in records[-1]["error"]
    assert summary["errors"] == 2 and summary["documents"] == len(texts) + 2

    import pyarrow as pa

    pq.write_table(pa.table({"body": [*texts, None]}), lake / "b.parquet")
    (lake / "a.jsonl").unlink()
    run_spark(
        model=tiny_model_dir,
        input=lake,
        output=tmp_path / "p",
        input_format="parquet",
        text_column="body",
        output_format="parquet",
    )
    table = pq.read_table(tmp_path / "p").sort_by("doc").to_pylist()
    assert [r["doc"] for r in table] == list(range(len(texts) + 1)) and table[-1]["error"].startswith("no text")
    by_json = {r["text"]: r["entities"] for r in records if r.get("error") is None}
    assert all(r["entities"] == by_json[r["text"]] for r in table[:-1])


def test_output_is_complete_or_absent(spark, tiny_model_dir, tmp_path):  # noqa: F811
    path = tmp_path / "in.txt"
    path.write_text("Peter visited Paris .\nBoris left .\n", encoding="utf-8")
    args = {"model": tiny_model_dir, "input": path, "one_per_line": True}
    with pytest.raises(Exception, match="CUDA|cuda"):
        run_spark(**args, output=tmp_path / "out", device="cuda")  # every task fails: the job dies
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]  # no output, no tmp folder

    first = run_spark(**args, output=tmp_path / "out")
    again = run_spark(**args, output=tmp_path / "out")  # a complete earlier output is replaced
    assert first["documents"] == again["documents"] == 2 and (tmp_path / "out" / "_SUCCESS").is_file()
    assert run_spark(**args, output=tmp_path / "out", resume=True)["outputs_already_complete"] == 1
    (tmp_path / "mine").mkdir()
    with pytest.raises(TagError, match="not a complete engine=spark output"):
        run_spark(**args, output=tmp_path / "mine")


def test_spark_overrides_are_taken_as_typed():
    """`spark.master=local[2]` and `spark.conf.<key>=<value>` on the command line (no Spark needed)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from ner.tagging.pipeline import TagConfig
    from ner.tagging.spark import SparkSettings, hydra_args
    from tests.conftest import ROOT

    typed = ["engine=spark", "spark.master=local[2]", "spark.conf.spark.executor.memory=4g", "input=x"]
    args = hydra_args([*typed, "spark.conf.spark.archives=env.tar.gz#env", "spark.conf.spark.sql.shuffle.partitions=8"])
    with initialize_config_dir(config_dir=str(ROOT / "conf" / "tag"), version_base="1.3"):
        cfg = TagConfig(**OmegaConf.to_container(compose(config_name="tag", overrides=args), resolve=True))
    assert cfg.engine == "spark" and cfg.spark["master"] == "local[2]"
    assert SparkSettings(**cfg.spark).properties() == {
        "spark.executor.memory": "4g",
        "spark.archives": "env.tar.gz#env",
        "spark.sql.shuffle.partitions": "8",
    }
