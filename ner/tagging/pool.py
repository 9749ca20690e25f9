"""Worker processes for the engine step of `ner.tagging.annotate.Annotator`, so reading, tokenising and writing
overlap it."""

from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np
import torch

from ner.model.engine import Engine, Tagged
from ner.tagging.annotate import Prepared, gc_paused


class AnnotatorPool:
    """Runs the engine step of an `Annotator` in worker processes, one torch thread each.

    The calling process reads, tokenises, builds records and writes while the workers tag, so the Python work
    and the model overlap; and single-threaded processes degrade gracefully when other jobs share the cores,
    where two OpenMP threads in one process can slow down tenfold. Workers are spawned (not forked: forking a
    process that has used OpenMP can hang) and load the tagger from `folder` themselves. A worker ends when the
    parent dies, whatever killed it (`_die_with`); the resource tracker then ends too, as its pipe closes.
    """

    def __init__(self, folder: str, workers: int, **settings):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("spawn")
        self.executor = ProcessPoolExecutor(
            workers, context, initializer=_start_worker, initargs=(folder, settings, os.getpid())
        )

    def submit(self, prepared: Prepared):
        """A future of (`Tagged`, the worker's stage seconds) for the tokens of `prepared`."""
        return self.executor.submit(_worker_tag, prepared.words, prepared.sent_lens, prepared.doc_sents)

    def close(self, cancel: bool = False) -> None:
        self.executor.shutdown(wait=True, cancel_futures=cancel)


_WORKER: tuple[Engine, str, bool] | None = None  # this worker's engine, precision, and whether entities are scored


PARENT_POLL_S = 1.0  # how often a worker checks that its parent is alive (where the kernel cannot tell it)


def _die_with(parent: int) -> None:
    """End this worker when `parent` dies, even by kill -9 (which leaves it no chance to stop the pool).

    Linux: the kernel sends SIGKILL on the parent's death (prctl PR_SET_PDEATHSIG); elsewhere, and for a parent
    that died before this ran, a daemon thread sees the process reparented and exits. Without this, each crash
    left two ~250 MB workers and the resource tracker running.
    """
    import signal

    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass  # the watchdog below still works
    if os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _start_worker(folder: str, settings: dict, parent: int) -> None:
    import signal

    from ner.model.tagger import Tagger

    global _WORKER
    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the pool
    torch.set_num_threads(1)
    device = settings.get("device", "cpu")
    engine = Engine(Tagger.load(folder, device), settings["batch_size"], settings["max_tokens"], device)
    _WORKER = engine, settings["precision"], settings.get("scores", True)  # Annotator's default: scored entities


def _worker_tag(words: list[str], sent_lens: list[int], doc_sents: list[int]) -> tuple[Tagged, dict[str, float]]:
    """What `Annotator.tag_prepared` gives (tags, entities and their scores), computed in this worker."""
    engine, precision, scores = _WORKER
    engine.seconds.clear()
    with gc_paused():
        tagged = engine.tag(words, np.asarray(sent_lens, dtype=np.int64), doc_sents, precision, scores=scores)
    return tagged, dict(engine.seconds)
