"""Bulk tagging from files to files: the work behind `python -m ner.tag` (ner/tag.py), callable from tests.

Documents stream through in chunks (`chunk_chars` characters or `chunk_docs` documents): each chunk is tagged in
one `Annotator` call (every sentence of the chunk bucketed by length, run under inference mode, Viterbi on whole
batches), written, and checkpointed, so memory stays flat however large the input. Reading, resume and the
output formats are in `ner.tagging.files`; model URIs in `ner.tracking.model_uri`. CoNLL input with gold tags
is also scored (seqeval, default and strict mode) as it streams.
"""

from __future__ import annotations

import gc
import hashlib
import sys
import time
from collections import Counter, deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ner import config
from ner.evaluation.errors import ErrorReport
from ner.evaluation.metrics import Scorer
from ner.tagging import spark
from ner.tagging.annotate import MAX_SENTENCE_TOKENS, PRECISIONS, Annotator, Prepared
from ner.tagging.files import Document, Plan, Reader, Router, TagError, check_model, chunks, plan
from ner.tagging.pool import AnnotatorPool
from ner.tagging.progress import progress
from ner.tracking import model_uri

STAGES = ("load", "read", "tokenise", "features", "model", "decode", "scores", "wait", "records", "write")


@dataclass
class TagConfig:
    """Every knob of `conf/tag/tag.yaml` (documented there)."""

    model: str = "best:ner"
    input: str | None = None
    output: str | None = None
    input_format: str = "text"
    one_per_line: bool = False
    output_format: str = "jsonl"
    on_decode_error: str = "error"
    max_document_mb: float = 16.0  # ~95 bytes of memory per input byte (benchmarks.document_memory): ~1.9 GiB
    resume: bool = False
    batch_size: int = 128
    max_tokens: int = 20_000
    max_sentence_tokens: int = MAX_SENTENCE_TOKENS
    chunk_chars: int = 500_000
    chunk_docs: int = 10_000
    threads: int = 1
    workers: int = 2
    device: str = "cpu"
    precision: str = "auto"
    scores: bool = True
    min_score: float = 0.0
    tracking_uri: str | None = None
    progress: bool = True
    engine: str = "local"
    text_column: str = "text"
    spark: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.input:
            raise TagError("input= is required: a text or CoNLL file, a folder, or a glob such as 'news/*.txt'")
        for name in ("batch_size", "max_tokens", "max_sentence_tokens", "chunk_chars", "chunk_docs"):
            if getattr(self, name) < 1:
                raise TagError(f"{name}={getattr(self, name)} must be >= 1")
        if self.threads < 0 or self.workers < 0:
            raise TagError("threads and workers must be >= 0")
        if not self.max_document_mb > 0:
            raise TagError(f"max_document_mb={self.max_document_mb} must be > 0")
        if self.precision not in PRECISIONS:
            raise TagError(f"precision={self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if not 0.0 <= self.min_score <= 1.0:
            raise TagError(f"min_score={self.min_score} must be between 0 and 1 (an entity's probability)")
        if self.min_score and not self.scores:
            raise TagError(f"min_score={self.min_score} needs the entity scores: drop scores=false")
        if self.engine not in ("local", "spark"):
            raise TagError(f"engine={self.engine!r} is not one of local, spark")
        config.device("device", self.device)

    def resume_settings(self) -> dict:
        """What must not change between an interrupted run and its `resume=true` continuation.

        `on_decode_error` may: stopping at a bad byte, then resuming with `on_decode_error=replace`, is the way on.
        The model is not compared by its URI here but by what it resolves to (`model_identity`, checked once it is
        resolved): `best:X` may name a newer run by then, and the same weights under another URI are fine.
        """
        keys = ("input_format", "one_per_line", "output_format", "max_sentence_tokens", "scores", "min_score")
        return {k: getattr(self, k) for k in keys}


def tag(cfg: TagConfig) -> dict:
    """Tag every document of `cfg.input` into `cfg.output`; returns the run summary (also for tests)."""
    if cfg.engine == "spark":
        return spark.tag(cfg)  # the same records, from a Spark cluster or local[N] (ner/tagging/spark.py)
    start = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    work = plan(cfg.input, cfg.output, cfg.output_format, cfg.resume, cfg.resume_settings())  # takes the lock
    try:
        return _planned(cfg, work, start)
    finally:
        work.release()


def _planned(cfg: TagConfig, work: Plan, start: float) -> dict:
    for path in work.skipped:
        print(f"skipped binary file {path}", file=sys.stderr)
    for path in work.earlier_outputs:
        print(f"skipped {path}: an output of ner.tag, not a document (name it alone to tag it)", file=sys.stderr)
    summary = Counter(files=sum(len(t.sources) for t in work.targets), binary_files_skipped=len(work.skipped))
    summary["outputs_already_complete"] = sum(t.done for t in work.targets)
    if all(t.done for t in work.targets):
        return run_summary(cfg, summary, Counter(), start)
    load_start = time.perf_counter()
    uri = cfg.model
    if str(uri).strip().startswith("best:"):  # resolved once, here, so that the run id is known and recorded
        uri = model_uri.best_run_uri(str(uri).strip()[len("best:") :] or "ner", cfg.tracking_uri)
    with model_uri.resolve(uri, cfg.tracking_uri) as folder:  # downloads stay until the workers are done
        model = model_identity(cfg.model, uri, folder)
        check_model(work.targets, model)  # before the model is loaded: a resume with other weights stops here
        return _run(cfg, work, folder, summary, (start, load_start), model)


def model_identity(given: str, resolved: str, folder: Path) -> dict:
    """What a partial output records of its model: the URI given and resolved, the run id, the weights' SHA-256."""
    resolved = str(resolved).strip()
    run_id = resolved.split("/")[1] if resolved.startswith("runs:/") and resolved.count("/") >= 2 else None
    sha = hashlib.sha256()
    for name in ("tagger.json", "weights.pt"):
        path = Path(folder) / name
        if path.is_file():
            with open(path, "rb") as f:
                while block := f.read(1 << 20):
                    sha.update(block)
    if run_id is None and not resolved.startswith(("models:/", "runs:/")):
        resolved = str(Path(resolved).expanduser().resolve())
    return {"model": str(given), "resolved": resolved, "run_id": run_id, "weights_sha256": sha.hexdigest()}


def _run(cfg: TagConfig, work: Plan, folder: Path, summary: Counter, starts: tuple[float, float], model: dict) -> dict:
    """Load the model (and start the workers), then read, tag, write and checkpoint chunk after chunk."""
    start, tick = starts
    settings = {
        "batch_size": cfg.batch_size,
        "max_tokens": cfg.max_tokens,
        "max_sentence_tokens": cfg.max_sentence_tokens,
        "device": cfg.device,
        "precision": cfg.precision,
        "scores": cfg.scores,
    }
    total = sum(p.stat().st_size for t in work.targets if not t.done for p in t.sources)
    # one chunk: nothing to overlap, no process to start; a GPU is fed from this process
    workers = cfg.workers if total > cfg.chunk_chars and cfg.device == "cpu" else 0
    annotator = Annotator(model_uri.load_folder(folder, cfg.device), **settings, min_score=cfg.min_score)
    settings["precision"] = annotator.precision  # "auto" resolved once, here: the workers run the same
    pool = AnnotatorPool(str(folder), workers, **settings) if workers else None
    seconds = annotator.seconds
    seconds["load"] = time.perf_counter() - tick
    gc.freeze()  # the model and its vocabularies live to the end: keep them out of every garbage collection
    reader = Reader(cfg.input_format, cfg.one_per_line, cfg.on_decode_error, int(cfg.max_document_mb * 2**20))
    router = Router(work.targets, cfg.output_format, cfg.resume_settings(), not work.folder_output, model)
    scorer = Scorer()
    featurizer = annotator.tagger.featurizer
    errors = ErrorReport(seen=set(featurizer.words.itos[: featurizer.training_words]) or None)
    bar = progress(total, cfg.progress)  # a bar on a terminal, a line every few minutes in a log
    try:
        chunked = chunks(reader.documents(work.targets, bar.update), cfg.chunk_chars, cfg.chunk_docs, seconds)
        for chunk, records in _tagged(annotator, pool, chunked, workers):
            tick = time.perf_counter()
            router.write(chunk, records)
            seconds["write"] += time.perf_counter() - tick
            _count(summary, chunk, records, annotator.own_tags, scorer, errors)
            bar.update(sum(d.size for d in chunk))
            rate = summary["tokens"] / max(time.perf_counter() - start, 1e-9)
            bar.set_postfix_str(f"{summary['documents']:,} docs, {rate:,.0f} tokens/s", refresh=False)
        router.close()
    except BaseException:
        router.abort()
        if pool is not None:
            pool.close(cancel=True)
            pool = None
        raise
    finally:
        bar.close()
        if pool is not None:
            pool.close()
    summary["decode_errors_replaced"] = reader.decode_errors
    summary["documents_resumed"] = sum(t.skip for t in work.targets if not t.done)
    out = run_summary(cfg, summary, seconds, start, scorer.scores() if scorer.used else None)
    if scorer.used:
        out["errors_report"] = _write_errors(errors, work)
    return {**out, "precision": annotator.precision}


def _write_errors(errors: ErrorReport, work: Plan) -> str:
    """Gold CoNLL input: the error analysis training logs for dev and test, beside the output."""
    first = work.targets[0].output
    path = first.parent / "errors.md" if work.folder_output else first.with_name(first.name + ".errors.md")
    path.write_text(errors.markdown(), encoding="utf-8")
    return str(path)


def _tagged(
    annotator: Annotator, pool: AnnotatorPool | None, chunks: Iterator[list[Document]], workers: int
) -> Iterator[tuple[list[Document], list[dict]]]:
    """(chunk, records) in input order; with a pool, up to `workers` + 1 chunks are in flight at once."""
    if pool is None:
        for chunk in chunks:
            yield chunk, _annotate(annotator, chunk)
        return
    pending: deque = deque()
    for chunk in chunks:
        prepared = _prepare(annotator, chunk)
        pending.append((chunk, prepared, pool.submit(prepared)))
        if len(pending) > workers:
            yield _collect(annotator, *pending.popleft())
    while pending:
        yield _collect(annotator, *pending.popleft())


def _prepare(annotator: Annotator, chunk: list[Document]) -> Prepared:
    if chunk[0].text is not None:
        return annotator.prepare([d.text for d in chunk])
    return annotator.prepare_tokens([d.sentences for d in chunk])


def _collect(annotator: Annotator, chunk: list[Document], prepared: Prepared, future) -> tuple[list, list[dict]]:
    """Wait for a chunk's tags from a worker and build its records; worker time is added to the stage times."""
    tick = time.perf_counter()
    ids, worker_seconds = future.result()
    annotator.seconds["wait"] += time.perf_counter() - tick
    annotator.seconds.update(worker_seconds)
    return chunk, annotator.finish(prepared, ids)


def _annotate(annotator: Annotator, chunk: list[Document]) -> list[dict]:
    if chunk[0].text is not None:
        return annotator.annotate([d.text for d in chunk])
    return annotator.annotate_tokens([d.sentences for d in chunk])


def _count(
    summary: Counter, chunk: list[Document], records: list[dict], own: list, scorer: Scorer, errors: ErrorReport
) -> None:
    """Add a chunk to the counts; gold CoNLL input is also scored (strict mode on the model's own tags: `own`,
    one list per sentence of the chunk) and its errors analysed."""
    summary["documents"] += len(chunk)
    summary["sentences"] += sum(len(r["sentences"]) for r in records)
    summary["tokens"] += sum(len(s["tokens"]) for r in records for s in r["sentences"])
    summary["entities"] += sum(len(r["entities"]) for r in records)
    gold = [g for d in chunk if d.gold is not None for g in d.gold]
    if gold:
        scored = [(d, r) for d, r in zip(chunk, records, strict=True) if d.gold is not None]
        pred = [s["tags"] for _, r in scored for s in r["sentences"]]
        tokens = [s["tokens"] for _, r in scored for s in r["sentences"]]
        first_sentence = [0]
        for r in records:
            first_sentence.append(first_sentence[-1] + len(r["sentences"]))
        own_scored = [
            own[i]
            for k, (d, _) in enumerate(zip(chunk, records, strict=True))
            if d.gold is not None
            for i in range(first_sentence[k], first_sentence[k + 1])
        ]
        scorer.add(gold, pred, own_scored)
        errors.add(tokens, gold, pred)


def run_summary(
    cfg: TagConfig,
    counts: Counter,
    seconds: Mapping[str, float],
    start: float,
    scores: dict | None = None,
    stages: Sequence[str] = STAGES,
) -> dict:
    """The summary `ner.tag` prints and `tag()` returns, for both engines: the counts, the output, the time since
    `start`, tokens/s, the `stages` found in `seconds` (in that order) and, for scored CoNLL input, the scores."""
    elapsed = time.perf_counter() - start
    out = {k: counts[k] for k in ("files", "documents", "documents_resumed", "sentences", "tokens", "entities")}
    out.update({k: counts[k] for k in ("binary_files_skipped", "decode_errors_replaced", "outputs_already_complete")})
    out.update({"output": cfg.output, "seconds": elapsed, "tokens_per_s": counts["tokens"] / max(elapsed, 1e-9)})
    out["stage_seconds"] = {k: seconds[k] for k in stages if k in seconds}
    if scores is not None:
        out["scores"] = scores
    return out
