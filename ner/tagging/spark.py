"""`python -m ner.tag engine=spark spark.master=<URL> ...`: the bulk tagger on Spark (a cluster or `local[N]`).

Same command, model URI, inputs and records as `engine=local`, and the same code for them: `ner.tagging.files`
splits files into documents (`lines`, `decode`) and groups them into chunks (`chunks`), each chunk is one
`ner.tagging.annotate.Annotator.annotate` call, `files.serialise` writes the JSON lines and
`ner.tagging.pipeline.run_summary` the summary, so the entities, bytes and ids are identical; Spark only
schedules. Choices, and why (more in docs/scale-out.md):

- `mapInArrow` plus a per-worker model cache, not `mlflow.pyfunc.spark_udf`: both load the model once per Python
  worker, but our pyfunc returns flat tokens/tags/entities, not the local records (sentences with offsets, source,
  doc), needs MLflow and the model's code on every executor, and cannot isolate one bad document.
- The driver resolves the URI once (runs:/, models:/name@alias, best:, a folder), so every executor tags with the
  same version even if an alias moves mid-job, and ships the tagger files with `SparkContext.addFile`: executors
  never talk to the MLflow store (nor import MLflow).
- Local text and JSONL files are read where they are tagged: the driver cuts them into byte ranges (whole files
  for one document per file; with one line per document, ranges of a big file, each task taking the lines that
  begin in its range, numbered from a quick parallel count of the line ends before it), one task per group of
  ranges. So the text crosses no shuffle and no second Python stage. URIs (`hdfs://`, `s3a://`) go through
  Spark's binaryFile reader and Parquet through Spark's; both are then spread over the tasks by a shuffle.
- A document that cannot be tagged (bad bytes or JSON, no text, an exception) becomes a record with an `error`
  field and no entities; the job goes on and the summary counts them.
- Output goes to `<output>.tmp-<id>`, renamed to `<output>` once Spark has committed it (`_SUCCESS`), so a folder
  named `<output>` is always complete. Part files are unordered: sort by (source, doc) for input order.

Past 300 lines: reading with Spark (byte ranges of local files, Spark's readers for URIs and Parquet), tagging on
the workers and committing the output are one engine whose parts share its schemas and settings; each part is
a section below.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import io
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ner.tagging.files import (
    Document,
    TagError,
    chunks,
    decode,
    discover,
    escape_line_separators,
    is_binary,
    lines,
    serialise,
)

INPUT_FORMATS = ("text", "jsonl", "parquet")
OUTPUT_FORMATS = ("jsonl", "parquet")
STAGES = ("start", "load", "read", "tag")  # the driver's stages in stage_seconds (load overlaps start)
WORKER_STAGES = ("read", "tokenise", "features", "model", "decode", "records", "write")  # summed over the tasks
ROWS_PER_BATCH = 10_000  # documents per Arrow batch when a file is split
MIN_RANGE_BYTES = 1 << 20  # a file is cut into byte ranges no smaller than this (one_per_line)
COUNT_BLOCK = 16 << 20  # bytes read at a time when counting line ends
COUNT_ON_DRIVER = 256 << 20  # up to this many bytes, the driver counts the line ends itself (~0.1 s), no job
DOCUMENTS = "source string, doc bigint, text string, error string, replaced boolean"  # replaced: bad bytes -> U+FFFD
RECORDS = (  # the JSONL record (ner/tagging/files.py) plus error: the Parquet output's columns
    "source string, doc bigint, text string, sentences array<struct<start:int, end:int, tokens:array<string>,"
    " offsets:array<array<int>>, tags:array<string>>>, entities array<struct<text:string, type:string, start:int,"
    " end:int, score:double>>, error string"
)
# local[N]: the driver's JVM is the executor, on the cores the Python workers tag on, and it only schedules and
# moves Arrow batches, so C2's compiling never pays back: with C1 alone it used 9-10 CPU-seconds per run of
# `python -m benchmarks.spark` instead of 15-20 (13 -> 8 for one document). spark.conf.* overrides it.
LOCAL_JAVA_OPTIONS = "-XX:TieredStopAtLevel=1"
_ANNOTATORS: dict = {}  # shipped model name -> Annotator, one per Python worker process


@dataclass
class SparkSettings:
    """The `spark.*` knobs of `conf/tag/tag.yaml`.

    Attributes:
        master: Any Spark master URL: local[N], spark://host:7077, yarn, k8s://https://host:443.
        partitions: Tagging tasks; 0 = 3 per core. Local files are cut into about this many groups of byte
            ranges (of at least `MIN_RANGE_BYTES` each); inputs Spark reads in fewer partitions are repartitioned.
        conf: Extra Spark properties; nested keys (as Hydra builds them from dotted overrides) are joined by dots.
    """

    master: str = "local[*]"
    partitions: int = 0
    conf: dict = field(default_factory=dict)

    def properties(self) -> dict[str, str]:
        return dict(_flatten(self.conf))


def tag(cfg) -> dict:
    """Tag `cfg.input` into the folder `cfg.output` on Spark; returns the summary `ner.tag` prints."""
    from ner.tracking import model_uri  # the driver only: executors never import MLflow

    start = time.perf_counter()
    _check(cfg)
    settings = SparkSettings(**dict(cfg.spark or {}))
    output = cfg.output.rstrip("/")
    if cfg.resume and _complete(output):
        return _summary(cfg, Counter(outputs_already_complete=1), {}, start)
    with contextlib.ExitStack() as stack:
        resolver = model_uri.resolve(cfg.model, cfg.tracking_uri)
        resolving = stack.enter_context(ThreadPoolExecutor(1)).submit(_timed, resolver.__enter__)
        stack.callback(lambda: resolving.exception() or resolver.__exit__(None, None, None))  # downloads go
        spark, owned = session(settings, cfg.progress)  # the JVM starts while the model downloads (load)
        if owned:
            stack.callback(spark.stop)
        seconds = {"start": time.perf_counter() - start}
        folder, seconds["load"] = resolving.result()
        tick = time.perf_counter()
        name = _ship(spark, folder, Path(stack.enter_context(tempfile.TemporaryDirectory())))
        frame, documents, counts = read(spark, cfg, settings)
        seconds["read"] = time.perf_counter() - tick
        counter = spark.sparkContext.accumulator(Counter(), _CounterParam())
        ddl = RECORDS if cfg.output_format == "parquet" else "value string"
        tagger = functools.partial(_tag_partition, name, _options(cfg, _arrow(spark, ddl)), documents, counter)
        tick = time.perf_counter()
        write(spark, frame.mapInArrow(tagger, ddl), output, cfg.output_format)
        seconds["tag"] = time.perf_counter() - tick
        counts.update(counter.value)
    return _summary(cfg, counts, seconds, start)


def _timed(call: Callable):
    tick = time.perf_counter()
    return call(), time.perf_counter() - tick


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
    builder = SparkSession.builder.master(settings.master).appName("ner.tag")
    builder = builder.config("spark.ui.showConsoleProgress", str(progress).lower())
    if settings.master.startswith("local"):
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # workers must run this venv's interpreter
        builder = builder.config("spark.driver.extraJavaOptions", LOCAL_JAVA_OPTIONS)
    for key, value in settings.properties().items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark, True


# ---------------------------------------------------------------------------------------------------- reading


def read(spark, cfg, settings: SparkSettings) -> tuple:
    """(DataFrame, the worker function that turns its Arrow batches into `Document`s, counts), in enough
    partitions for every core to tag."""
    wanted = settings.partitions or 3 * spark.sparkContext.defaultParallelism
    options = (cfg.input_format, cfg.one_per_line or cfg.input_format == "jsonl", cfg.on_decode_error, cfg.text_column)
    if cfg.input_format == "parquet":
        docs = _parquet(spark, cfg.input, cfg.text_column)
        return _spread(docs, wanted), _rows, Counter(files=len(docs.inputFiles()))
    if "://" in cfg.input or cfg.input.startswith("file:"):
        table = spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(cfg.input)
        raw = table.selectExpr("path as source", "content")
        docs = raw.mapInArrow(functools.partial(_split_partition, *options, _arrow(spark, DOCUMENTS)), DOCUMENTS)
        return _spread(docs, wanted), _rows, Counter(files=len(table.inputFiles()))
    files, counts = _local_files(cfg.input, cfg.output)
    groups = _ranges(spark, files, options[1], wanted)
    ids = spark.range(len(groups), numPartitions=len(groups))  # task i reads the ranges of group i itself
    return ids, functools.partial(_range_documents, groups, *options), counts


def _spread(docs, wanted: int):
    if docs.rdd.getNumPartitions() < wanted:
        docs = docs.repartition(wanted, "source", "doc")  # hash partitioning: even, and no sort on retry
    return docs


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


def _local_files(spec: str, output: str) -> tuple[list[tuple[str, int]], Counter]:
    """(path, size) of the text files of a local `spec`, with the local engine's rules (sorted, hidden files
    ignored, binary files skipped, the output left out), and counts."""
    _, files, named = discover(spec)
    out = Path(output).resolve()
    files = [p for p in files if out not in p.resolve().parents]
    text = [(str(p), p.stat().st_size) for p in files if named or not is_binary(p)]
    if not text:
        raise TagError(f"input {spec!r} holds no text files")
    return text, Counter(files=len(text), binary_files_skipped=len(files) - len(text))


def _ranges(spark, files: list[tuple[str, int]], per_line: bool, wanted: int) -> list[list[tuple]]:
    """The files as about `wanted` groups of (source, start, stop, first line) byte ranges of similar size.

    With one document per line, a file bigger than a group's share is cut into several ranges; each takes the
    lines that begin in it (`files.lines`), and the index of its first line is the number of lines begun before
    it, counted by Spark in parallel (`_line_ends`). Otherwise a range is a whole file.
    """
    share = max(-(-sum(size for _, size in files) // wanted), MIN_RANGE_BYTES)
    ranges = []
    for source, size in files:
        starts = range(0, size, share) if per_line and size > share else [0]
        ranges.extend([source, a, min(a + share, size), 0] for a in starts)
    inner = [i for i in range(len(ranges) - 1) if ranges[i + 1][1]]  # followed by another range of its file
    pieces = [tuple(ranges[i][:3]) for i in inner]
    if sum(stop - start for _, start, stop in pieces) > COUNT_ON_DRIVER:
        ends = spark.sparkContext.parallelize(pieces, len(pieces)).map(_line_ends).collect()
    else:  # counting runs at disk speed: for this much, faster here than a Spark job
        ends = [_line_ends(piece) for piece in pieces]
    for i, n in zip(inner, ends, strict=True):
        ranges[i + 1][3] = (ranges[i][3] if ranges[i][1] else 1) + n  # a file's first line begins at 0
    groups, size = [[]], 0
    for source, start, stop, first in ranges:
        if size >= share:
            groups.append([])
            size = 0
        groups[-1].append((source, start, stop, first))
        size += stop - start
    return groups


def _line_ends(piece: tuple[str, int, int]) -> int:
    """The "\\n" bytes in [start - 1, stop - 1) of a file: one per line that begins in [start, stop), but at 0."""
    source, start, stop = piece
    count, todo = 0, stop - max(start - 1, 0) - 1
    try:
        with open(source, "rb") as f:
            f.seek(max(start - 1, 0))
            while todo > 0 and (block := f.read(min(COUNT_BLOCK, todo))):
                count += block.count(b"\n")
                todo -= len(block)
    except OSError:
        return 0  # the tagging task reports it, as a record
    return count


def _range_documents(groups, fmt, per_line, on_error, column, batches) -> Iterator[Document]:
    """Worker side: group ids (from `spark.range`) -> the documents of the group's byte ranges, read here."""
    for batch in batches:
        for group in batch.column(0).to_pylist():
            for source, start, stop, first in groups[group]:
                try:
                    with open(source, "rb") as f:
                        yield from _file_documents(source, f, start, stop, first, fmt, per_line, on_error, column)
                except OSError as err:  # one error record stands for the range
                    message = f"cannot read it on this executor ({err}): put the input where every executor sees it"
                    yield Document(0, source, first, 0, text="", error=message)


def _split_partition(fmt, per_line, on_error, column, schema, batches) -> Iterator:
    """Worker side: files read by Spark (source, content) -> documents, in Arrow batches (URI inputs)."""
    import pyarrow as pa

    for batch in batches:
        for source, content in zip(*(batch.column(k).to_pylist() for k in ("source", "content")), strict=True):
            docs = _file_documents(source, io.BytesIO(content), 0, None, 0, fmt, per_line, on_error, column)
            while part := list(itertools.islice(docs, ROWS_PER_BATCH)):
                rows = [
                    {"source": d.source, "doc": d.index, "text": d.text, "error": d.error, "replaced": d.replaced}
                    for d in part
                ]
                yield pa.RecordBatch.from_pylist(rows, schema=schema)


def _rows(batches) -> Iterator[Document]:
    """Worker side: Arrow batches of `DOCUMENTS` -> `Document`s."""
    for batch in batches:
        columns = (batch.column(k).to_pylist() for k in ("source", "doc", "text", "error", "replaced"))
        for source, doc, text, error, replaced in zip(*columns, strict=True):
            yield Document(0, source, doc, 0, text=text, error=error, replaced=bool(replaced))


def _file_documents(source, f, start, stop, first, fmt, per_line, on_error, column) -> Iterator[Document]:
    """The documents of one byte range of a file, numbered as `files.Reader` numbers them; problems go to
    `error`, as records."""
    if not per_line:
        yield _decoded(source, 0, f.read(), 0, None, on_error)
        return
    for index, offset, line, _ in lines(f, source, start, stop, first):
        doc = _decoded(source, index, line, offset, index + 1, on_error)
        yield _json_text(doc, column) if fmt == "jsonl" and doc.error is None else doc


def _decoded(source: str, index: int, raw: bytes, offset: int, line: int | None, on_error: str) -> Document:
    try:
        text, replaced = decode(raw, source, offset, line, on_error)
        return Document(0, source, index, 0, text=text, replaced=replaced)
    except TagError as err:
        text, _ = decode(raw, source, offset, line, "replace")
        return Document(0, source, index, 0, text=text, error=f"not tagged: {err}")


def _json_text(doc: Document, column: str) -> Document:
    try:
        value = json.loads(doc.text)
        text = value.get(column) if isinstance(value, dict) else None
    except ValueError as err:
        return Document(0, doc.source, doc.index, 0, text="", error=f"line {doc.index + 1}: not JSON ({err})")
    if not isinstance(text, str):
        error = f"line {doc.index + 1}: no string {column!r} field (text_column=)"
        return Document(0, doc.source, doc.index, 0, text="", error=error)
    return Document(0, doc.source, doc.index, 0, text=text, replaced=doc.replaced)


# ---------------------------------------------------------------------------------------------------- tagging


def _options(cfg, schema) -> dict:
    keys = ("batch_size", "max_tokens", "max_sentence_tokens", "device", "precision", "chunk_chars", "chunk_docs")
    keys += ("scores", "min_score")
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

        from ner.model.tagger import Tagger
        from ner.tagging.annotate import Annotator

        torch.set_num_threads(options["threads"])  # one per worker: N workers share N cores
        keys = ("batch_size", "max_tokens", "max_sentence_tokens", "device", "precision", "scores", "min_score")
        tagger = Tagger.load(SparkFiles.get(name), options["device"])
        _ANNOTATORS[name] = Annotator(tagger, **{k: options[k] for k in keys})
        gc.freeze()  # as engine=local: the model lives as long as the worker, out of every garbage collection
        counts["model_loads"] += 1
        counts["model_load_seconds"] += time.perf_counter() - start
    return _ANNOTATORS[name]


def _tag_partition(name: str, options: dict, documents: Callable, counter, batches) -> Iterator:
    """Worker side: the partition's documents -> records, one `Annotator.annotate` call per `files.chunks` chunk.

    The task's wall time (`task_seconds`, summed over tasks: slot-seconds) gives the per-core throughput that
    sizes a cluster, free of the job's start-up cost; its stages (reading, the annotator's, writing) add up to it.
    """
    start, counts = time.perf_counter(), Counter()
    annotator = _annotator(name, options, counts)
    before = Counter(annotator.seconds)
    for chunk in chunks(documents(batches), options["chunk_chars"], options["chunk_docs"], counts):
        records = _records(annotator, chunk, counts)
        tick = time.perf_counter()
        batch = _batch(chunk, records, options["schema"])
        counts["write"] += time.perf_counter() - tick
        yield batch
    counts.update({k: v - before[k] for k, v in annotator.seconds.items()})
    counts["task_seconds"] += time.perf_counter() - start
    counter.add(counts)


def _records(annotator, docs: list[Document], counts: Counter) -> list[dict]:
    """The records of one chunk (one `Annotator.annotate` call), counted into `counts`."""
    good = [d for d in docs if d.error is None]
    try:
        tagged = annotator.annotate([d.text for d in good])
    except Exception:  # noqa: BLE001 - tag one by one: a bad document costs only itself
        tagged = [_annotate_one(annotator, d) for d in good]
    by_doc = dict(zip(map(id, good), tagged, strict=True))
    out = []
    for doc in docs:
        record = by_doc.get(id(doc)) or {"text": doc.text, "sentences": [], "entities": [], "error": doc.error}
        out.append(record)
        counts["errors"] += record.get("error") is not None
        counts["decode_errors_replaced"] += doc.replaced
        counts["sentences"] += len(record["sentences"])
        counts["tokens"] += sum(len(s["tokens"]) for s in record["sentences"])
        counts["entities"] += len(record["entities"])
    counts["documents"] += len(docs)
    return out


def _annotate_one(annotator, doc: Document) -> dict:
    try:
        return annotator.annotate([doc.text])[0]
    except Exception as err:  # noqa: BLE001 - reported in the record, the job goes on
        return {"text": doc.text, "sentences": [], "entities": [], "error": f"{type(err).__name__}: {err}"[:500]}


def _batch(docs: list[Document], records: list[dict], schema):
    """A batch of `RECORDS`, or of the JSON lines `engine=local` writes (`files.serialise`), without their "\\n"."""
    import pyarrow as pa

    if schema.names != ["value"]:
        rows = [{"source": d.source, "doc": d.index, **r} for d, r in zip(docs, records, strict=True)]
        return pa.RecordBatch.from_pylist(rows, schema=schema)
    text = [serialise("jsonl", d, r)[:-1] for d, r in zip(docs, records, strict=True)]
    return pa.RecordBatch.from_pydict({"value": [escape_line_separators(line) for line in text]}, schema=schema)


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
    from ner.tagging.pipeline import run_summary  # pipeline imports this module: the summary of both engines

    out = run_summary(cfg, counts, seconds, start, stages=STAGES)
    out.update({k: counts[k] for k in ("errors", "model_loads")})
    out["engine"] = "spark"
    workers = {"tasks": counts["task_seconds"], "model_load": counts["model_load_seconds"]}
    out["worker_seconds"] = {**workers, **{k: counts[k] for k in WORKER_STAGES if k in counts}}
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
