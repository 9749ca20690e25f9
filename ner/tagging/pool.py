"""Worker processes for the engine step of `ner.tagging.annotate.Annotator`, so reading, tokenising and writing
overlap it."""

from __future__ import annotations

import numpy as np
import torch

from ner.model.engine import Engine
from ner.tagging.annotate import Prepared, gc_paused


class AnnotatorPool:
    """Runs the engine step of an `Annotator` in worker processes, one torch thread each.

    The calling process reads, tokenises, builds records and writes while the workers tag, so the Python work
    and the model overlap; and single-threaded processes degrade gracefully when other jobs share the cores,
    where two OpenMP threads in one process can slow down tenfold. Workers are spawned (not forked: forking a
    process that has used OpenMP can hang) and load the tagger from `folder` themselves.
    """

    def __init__(self, folder: str, workers: int, **settings):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("spawn")
        self.executor = ProcessPoolExecutor(workers, context, initializer=_start_worker, initargs=(folder, settings))

    def submit(self, prepared: Prepared):
        """A future of (IOB2 ids, the worker's stage seconds) for the tokens of `prepared`."""
        return self.executor.submit(_worker_tag, prepared.words, prepared.sent_lens, prepared.doc_sents)

    def close(self, cancel: bool = False) -> None:
        self.executor.shutdown(wait=True, cancel_futures=cancel)


_WORKER: tuple[Engine, str] | None = None  # this worker's engine and precision


def _start_worker(folder: str, settings: dict) -> None:
    import signal

    from ner.model.tagger import Tagger

    global _WORKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the pool
    torch.set_num_threads(1)
    device = settings.get("device", "cpu")
    engine = Engine(Tagger.load(folder, device), settings["batch_size"], settings["max_tokens"], device)
    _WORKER = engine, settings["precision"]


def _worker_tag(words: list[str], sent_lens: list[int], doc_sents: list[int]) -> tuple[np.ndarray, dict[str, float]]:
    engine, precision = _WORKER
    engine.seconds.clear()
    with gc_paused():
        ids = engine.iob2_ids(words, np.asarray(sent_lens, dtype=np.int64), doc_sents, precision)
    return ids.astype(np.int16), dict(engine.seconds)
