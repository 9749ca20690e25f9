"""`python -m ner.tag engine=spark spark.master=<URL> ...`: the bulk tagger on Spark (a cluster or `local[N]`).

Same command, model URI, inputs and records as `engine=local`: every document goes through
`ner.annotate.Annotator` (same tokeniser, length bucketing and chunks), so the entities are identical; Spark only
schedules. Choices, and why (more in docs/scale-out.md):

- `mapInArrow` plus a per-worker model cache, not `mlflow.pyfunc.spark_udf`: both load the model once per Python
  worker, but our pyfunc returns flat tokens/tags/entities, not the local records (sentences with offsets, source,
  doc), needs MLflow and the model's code on every executor, and cannot isolate one bad document.
- The driver resolves the URI once (runs:/, models:/name@alias, best:, a folder), so every executor tags with the
  same version even if an alias moves mid-job, and ships the tagger files with `SparkContext.addFile`: executors
  never talk to the MLflow store.
- Text and JSONL files are split into documents by the workers with `ner.tag_io`'s rules, so ids (source, doc)
  match the local engine. A document that cannot be tagged (bad bytes or JSON, no text, an exception) becomes a
  record with an `error` field and no entities; the job goes on and the summary counts them.
- Output goes to `<output>.tmp-<id>`, renamed to `<output>` once Spark has committed it (`_SUCCESS`), so a folder
  named `<output>` is always complete. Part files are unordered: sort by (source, doc) for input order.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ner.tagging.files import _LINE_SEPARATORS, Document, Reader, TagError, discover, is_binary, serialise
from ner.tracking import model_uri

INPUT_FORMATS = ("text", "jsonl", "parquet")
OUTPUT_FORMATS = ("jsonl", "parquet")
ROWS_PER_BATCH = 10_000  # documents per Arrow batch when a file is split
DOCUMENTS = "source string, doc bigint, text string, error string, replaced boolean"  # replaced: bad bytes -> U+FFFD
RECORDS = (  # the JSONL record (ner/tag_io.py) plus error: the Parquet output's columns
    "source string, doc bigint, text string, sentences array<struct<start:int, end:int, tokens:array<string>,"
    " offsets:array<array<int>>, tags:array<string>>>, entities array<struct<text:string, type:string, start:int,"
    " end:int>>, error string"
)
_STRICT, _LENIENT = Reader(on_decode_error="error"), Reader(on_decode_error="replace")
_ANNOTATORS: dict = {}  # shipped model name -> Annotator, one per Python worker process


@dataclass
class SparkSettings:
    """The `spark.*` knobs of `conf/tag/tag.yaml`.

    Attributes:
        master: Any Spark master URL: local[N], spark://host:7077, yarn, k8s://https://host:443.
        partitions: Tagging tasks; 0 = 3 per core. Inputs split into fewer partitions are repartitioned.
        conf: Extra Spark properties; nested keys (as Hydra builds them from dotted overrides) are joined by dots.
    """

    master: str = "local[*]"
    partitions: int = 0
    conf: dict = field(default_factory=dict)

    def properties(self) -> dict[str, str]:
        return dict(_flatten(self.conf))


def tag(cfg) -> dict:
    """Tag `cfg.input` into the folder `cfg.output` on Spark; returns the summary `ner.tag` prints."""
    start = time.perf_counter()
    _check(cfg)
    settings = SparkSettings(**dict(cfg.spark or {}))
    output = cfg.output.rstrip("/")
    if cfg.resume and _complete(output):
        return _summary(cfg, Counter(outputs_already_complete=1), {}, start)
    spark, owned = session(settings, cfg.progress)
    seconds = {"start": time.perf_counter() - start}
    try:
        tick = time.perf_counter()
        with model_uri.resolve(cfg.model, cfg.tracking_uri) as folder, tempfile.TemporaryDirectory() as tmp:
            name = _ship(spark, folder, Path(tmp))
            seconds["load"] = time.perf_counter() - tick
            tick = time.perf_counter()
            docs, counts = read(spark, cfg, settings)
            seconds["read"] = time.perf_counter() - tick
            counter = spark.sparkContext.accumulator(Counter(), _CounterParam())
            ddl = RECORDS if cfg.output_format == "parquet" else "value string"
            tagger = functools.partial(_tag_partition, name, _options(cfg, _arrow(spark, ddl)), counter)
            records = docs.mapInArrow(tagger, ddl)
            tick = time.perf_counter()
            write(spark, records, output, cfg.output_format)
            seconds["tag"] = time.perf_counter() - tick
            counts.update(counter.value)
    finally:
        if owned:
            spark.stop()
    return _summary(cfg, counts, seconds, start)


def _check(cfg) -> None:
    for key, allowed in (("input_format", INPUT_FORMATS), ("output_format", OUTPUT_FORMATS)):
        if getattr(cfg, key) not in allowed:
            raise TagError(f"engine=spark: {key}={getattr(cfg, key)!r} is not one of {', '.join(allowed)}")
    if not cfg.output:
        raise TagError("output= is required: engine=spark writes a folder of part files plus _SUCCESS")


def session(settings: SparkSettings, progress: bool = False):
    """The active session if it has the same master (tests, notebooks), else a new one: (session, created)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise TagError('engine=spark needs PySpark: pip install -c constraints.txt -e ".[spark]"') from None
    active = SparkSession.getActiveSession()
    if active is not None:
        if active.sparkContext.master != settings.master:
            raise TagError(f"a Spark session with master {active.sparkContext.master} is already running here")
        return active, False
    if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
        raise TagError("engine=spark needs Java 17+ (Debian: apt-get install openjdk-17-jre-headless)")
    if settings.master.startswith("local"):
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # workers must run this venv's interpreter
    builder = SparkSession.builder.master(settings.master).appName("ner.tag")
    builder = builder.config("spark.ui.showConsoleProgress", str(progress).lower())
    for key, value in settings.properties().items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark, True


# ---------------------------------------------------------------------------------------------------- reading


def read(spark, cfg, settings: SparkSettings):
    """(DataFrame of source, doc, text, error; counts), in enough partitions for every core to tag."""
    counts = Counter()
    if cfg.input_format == "parquet":
        docs = _parquet(spark, cfg.input, cfg.text_column)
        counts["files"] = len(docs.inputFiles())
    else:
        raw, counts = _raw_files(spark, cfg.input, cfg.output)
        options = (cfg.input_format, cfg.one_per_line, cfg.on_decode_error, cfg.text_column)
        docs = raw.mapInArrow(functools.partial(_split_partition, *options, _arrow(spark, DOCUMENTS)), DOCUMENTS)
    wanted = settings.partitions or 3 * spark.sparkContext.defaultParallelism
    if docs.rdd.getNumPartitions() < wanted:
        docs = docs.repartition(wanted, "source", "doc")  # hash partitioning: even, and no sort on retry
    return docs, counts


def _parquet(spark, spec: str, column: str):
    from pyspark.sql import functions as F

    table = spark.read.parquet(spec)
    if column not in table.columns:
        raise TagError(f"input {spec}: no column {column!r} (columns: {', '.join(table.columns)}); set text_column=")
    text = F.col(column).cast("string")
    return table.select(
        F.col("_metadata.file_path").alias("source"),
        F.col("_metadata.row_index").alias("doc"),
        text.alias("text"),
        F.when(text.isNull(), F.lit(f"no text: {column} is null")).alias("error"),
        F.lit(False).alias("replaced"),
    )


def _raw_files(spark, spec: str, output: str):
    """(DataFrame of source, content) and counts. Local paths are listed here, with the local engine's rules
    (sorted, hidden files ignored, binary files skipped) and read by the workers; URIs go to Spark's reader."""
    if "://" in spec or spec.startswith("file:"):
        table = spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(spec)
        return table.selectExpr("path as source", "content"), Counter(files=len(table.inputFiles()))
    _, files, named = discover(spec)
    out = Path(output).resolve()
    files = [p for p in files if out not in p.resolve().parents]
    text = [str(p) for p in files if named or not is_binary(p)]
    if not text:
        raise TagError(f"input {spec!r} holds no text files")
    rdd = spark.sparkContext.parallelize([(p, None) for p in text], min(len(text), 4 * 1024))
    return spark.createDataFrame(rdd, "source string, content binary"), Counter(
        files=len(text), binary_files_skipped=len(files) - len(text)
    )


def _split_partition(fmt, one_per_line, on_error, column, schema, batches) -> Iterator:
    """Worker side: files (source, content or None = read it here) -> documents, one Arrow batch per file."""
    import pyarrow as pa

    for batch in batches:
        for row in batch.to_pylist():
            try:
                raw = row["content"] if row["content"] is not None else Path(row["source"]).read_bytes()
                docs = _documents(row["source"], raw, fmt, one_per_line or fmt == "jsonl", on_error, column)
            except OSError as err:  # one error record stands for the file
                message = f"cannot read it on this executor ({err}): put the input where every executor sees it"
                docs = iter([{"source": row["source"], "doc": 0, "text": "", "error": message}])
            while rows := list(itertools.islice(docs, ROWS_PER_BATCH)):
                yield pa.RecordBatch.from_pylist(rows, schema=schema)


def _documents(source: str, raw: bytes, fmt: str, lines: bool, on_error: str, column: str) -> Iterator[dict]:
    """The documents of one file, numbered as `ner.tag_io.Reader` numbers them; decode problems go to `error`."""
    if not lines:
        yield _decoded(source, 0, raw, 0, None, on_error)
        return
    parts = raw.split(b"\n")
    if parts[-1] == b"":
        parts.pop()  # "a\nb\n" is two documents, as is "a\nb"
    offset = 0
    for index, part in enumerate(parts):
        line = part[:-1] if part.endswith(b"\r") else part
        row = _decoded(source, index, line, offset, index + 1, on_error)
        yield _json_text(row, column) if fmt == "jsonl" and row["error"] is None else row
        offset += len(part) + 1


def _decoded(source: str, index: int, raw: bytes, offset: int, line: int | None, on_error: str) -> dict:
    try:
        return {"source": source, "doc": index, "text": _STRICT._decode(raw, Path(source), offset, line), "error": None}
    except TagError as err:
        text = _LENIENT._decode(raw, Path(source), offset, line)
        if on_error == "replace":
            return {"source": source, "doc": index, "text": text, "error": None, "replaced": True}
        return {"source": source, "doc": index, "text": text, "error": f"not tagged: {err}"}


def _json_text(row: dict, column: str) -> dict:
    try:
        value = json.loads(row["text"])
        text = value.get(column) if isinstance(value, dict) else None
    except ValueError as err:
        return {**row, "text": "", "error": f"line {row['doc'] + 1}: not JSON ({err})"}
    if not isinstance(text, str):
        return {**row, "text": "", "error": f"line {row['doc'] + 1}: no string {column!r} field (text_column=)"}
    return {**row, "text": text}


# ---------------------------------------------------------------------------------------------------- tagging


def _options(cfg, schema) -> dict:
    keys = ("batch_size", "max_tokens", "max_sentence_tokens", "device", "precision", "chunk_chars", "chunk_docs")
    return {**{k: getattr(cfg, k) for k in keys}, "threads": cfg.threads or 1, "schema": schema}


def _ship(spark, folder: Path, tmp: Path) -> str:
    """Copy the tagger files under a unique name and hand them to Spark, which copies them to every executor."""
    name = f"ner-tagger-{uuid.uuid4().hex[:12]}"
    shutil.copytree(folder, tmp / name)
    spark.sparkContext.addFile(str(tmp / name), recursive=True)
    return name


def _annotator(name: str, options: dict, counts: Counter):
    """The worker's Annotator for the shipped model `name`, loaded on first use (Python workers are reused)."""
    if name not in _ANNOTATORS:
        start = time.perf_counter()
        import torch
        from pyspark import SparkFiles

        from ner.tagging.annotate import Annotator

        torch.set_num_threads(options["threads"])  # one per worker: N workers share N cores
        tagger = model_uri.load_folder(SparkFiles.get(name), options["device"])
        keys = ("batch_size", "max_tokens", "max_sentence_tokens", "device", "precision")
        _ANNOTATORS[name] = Annotator(tagger, **{k: options[k] for k in keys})
        counts["model_loads"] += 1
        counts["model_load_seconds"] += time.perf_counter() - start
    return _ANNOTATORS[name]


def _tag_partition(name: str, options: dict, counter, batches) -> Iterator:
    """Worker side: documents -> records, a chunk of ~`chunk_chars` characters per `Annotator.annotate` call.

    The task's wall time (`task_seconds`, summed over tasks: slot-seconds) gives the per-core throughput that
    sizes a cluster, free of the job's start-up cost.
    """
    start, counts = time.perf_counter(), Counter()
    annotator = _annotator(name, options, counts)
    chunk, size = [], 0
    for batch in batches:
        for row in batch.to_pylist():
            chunk.append(row)
            size += len(row["text"] or "") + 1
            if size >= options["chunk_chars"] or len(chunk) >= options["chunk_docs"]:
                yield _batch(_records(annotator, chunk, counts), options["schema"])
                chunk, size = [], 0
    if chunk:
        yield _batch(_records(annotator, chunk, counts), options["schema"])
    counts["task_seconds"] += time.perf_counter() - start
    counter.add(counts)


def _records(annotator, rows: list[dict], counts: Counter) -> list[dict]:
    """The records of one chunk (one `Annotator.annotate` call), counted into `counts`."""
    good = [r for r in rows if r["error"] is None]
    try:
        tagged = annotator.annotate([r["text"] for r in good])
    except Exception:  # noqa: BLE001 - tag one by one: a bad document costs only itself
        tagged = [_annotate_one(annotator, r) for r in good]
    by_row = dict(zip(map(id, good), tagged, strict=True))
    out = []
    for row in rows:
        record = by_row.get(id(row)) or {"text": row["text"], "sentences": [], "entities": [], "error": row["error"]}
        out.append({"source": row["source"], "doc": row["doc"], **record})
        counts["errors"] += record.get("error") is not None
        counts["decode_errors_replaced"] += bool(row.get("replaced"))
        counts["sentences"] += len(record["sentences"])
        counts["tokens"] += sum(len(s["tokens"]) for s in record["sentences"])
        counts["entities"] += len(record["entities"])
    counts["documents"] += len(rows)
    return out


def _annotate_one(annotator, row: dict) -> dict:
    try:
        return annotator.annotate([row["text"]])[0]
    except Exception as err:  # noqa: BLE001 - reported in the record, the job goes on
        return {"text": row["text"], "sentences": [], "entities": [], "error": f"{type(err).__name__}: {err}"[:500]}


def _batch(records: list[dict], schema):
    """A batch of `RECORDS`, or of JSON lines made by `ner.tag_io.serialise` (the bytes `engine=local` writes)."""
    import pyarrow as pa

    if schema.names != ["value"]:
        return pa.RecordBatch.from_pylist(records, schema=schema)
    return pa.RecordBatch.from_pydict({"value": [_json_line(r) for r in records]}, schema=schema)


def _json_line(record: dict) -> str:
    doc = Document(0, record["source"], record["doc"], 0)
    line = serialise("jsonl", doc, record)[:-1]
    if record.get("error") is not None:
        line = f'{line[:-1]}, "error": {json.dumps(record["error"], ensure_ascii=False)}}}'
    for char, escaped in _LINE_SEPARATORS.items():  # as tag_io.Writer does: str.splitlines() splits on these
        line = line.replace(char, escaped)
    return line


# ---------------------------------------------------------------------------------------------------- writing


def write(spark, records, output: str, fmt: str) -> None:
    """Write `records` to `<output>.tmp-<id>` and rename that to `<output>` once Spark has committed it.

    An existing `<output>` is replaced only if it is an earlier complete output (it has `_SUCCESS`). The renames go
    through Hadoop's FileSystem (local, HDFS, S3, ...): on HDFS and local disks they are atomic.
    """
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path
    fs = path(output).getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    if fs.exists(path(output)) and not fs.exists(path(f"{output}/_SUCCESS")):
        raise TagError(f"output {output} exists and is not a complete engine=spark output: remove it or pick another")
    tmp, old = (f"{output}.{kind}-{uuid.uuid4().hex[:12]}" for kind in ("tmp", "old"))
    try:
        if fmt == "parquet":
            records.write.parquet(tmp)
        else:
            records.write.text(tmp)
            for status in fs.globStatus(path(f"{tmp}/part-*.txt")):  # the text writer calls every file .txt
                fs.rename(status.getPath(), path(f"{tmp}/{status.getPath().getName()[:-4]}.jsonl"))
        replaced = fs.exists(path(output)) and fs.rename(path(output), path(old))
        if not fs.rename(path(tmp), path(output)):
            raise TagError(f"could not rename {tmp} to {output}")
        if replaced:
            fs.delete(path(old), True)
    finally:
        fs.delete(path(tmp), True)


def _complete(output: str) -> bool:
    return "://" not in output and (Path(output) / "_SUCCESS").is_file()  # resume=true: a finished job is kept


# ---------------------------------------------------------------------------------------------------- helpers


class _CounterParam:
    """Accumulator arithmetic for `Counter`s (sums per key)."""

    def zero(self, value: Counter) -> Counter:
        return Counter()

    def addInPlace(self, a: Counter, b: Counter) -> Counter:  # noqa: N802 - Spark's name
        a.update(b)
        return a


def _arrow(spark, ddl: str):
    """The Arrow schema of a DDL string (parsed by the driver's JVM; the workers get the result)."""
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(spark.createDataFrame([], ddl).schema)


def _flatten(conf: dict, prefix: str = "") -> Iterator[tuple[str, str]]:
    for key, value in conf.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", str(value).lower() if isinstance(value, bool) else str(value)


def _summary(cfg, counts: Counter, seconds: dict, start: float) -> dict:
    elapsed = time.perf_counter() - start
    keys = ("files", "documents", "sentences", "tokens", "entities", "errors", "binary_files_skipped")
    out = {k: counts[k] for k in keys}
    out.update({k: counts[k] for k in ("decode_errors_replaced", "outputs_already_complete", "model_loads")})
    out.update({"documents_resumed": 0, "output": cfg.output, "engine": "spark"})
    out["worker_seconds"] = {"tasks": counts["task_seconds"], "model_load": counts["model_load_seconds"]}
    out.update({"seconds": elapsed, "tokens_per_s": counts["tokens"] / max(elapsed, 1e-9), "stage_seconds": seconds})
    return out


def hydra_args(argv: list[str]) -> list[str]:
    """The command line with `spark.master=local[2]` and `spark.conf.<key>=<value>` made valid Hydra overrides.

    Hydra reads `[` as a list and refuses keys that are not in the config, so the values are quoted and the
    `spark.conf.` keys get `++` (add or override); an argument already quoted is left as typed.
    """
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        name = key.lstrip("+")
        if sep and (name == "spark.master" or name.startswith("spark.conf.")) and not set(value) & set("'\""):
            key = f"++{name}" if name.startswith("spark.conf.") else key
            arg = f"{key}='{value}'"
        out.append(arg)
    return out
