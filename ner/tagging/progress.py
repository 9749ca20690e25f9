"""Progress of a long `ner.tag` run: a bar on a terminal, a plain line every few minutes otherwise.

Redirected to a file (CI, nohup, `> tag.log`) a bar is thousands of carriage-return redraws; a line now and then
says the same and reads well in a log.
"""

from __future__ import annotations

import sys
import time

LINE_EVERY_S = 180.0  # seconds between progress lines when stderr is not a terminal


def progress(total: int, enabled: bool, every: float = LINE_EVERY_S):
    """A tqdm bar over `total` input bytes on a terminal, else `Lines` (both: update, set_postfix_str, close)."""
    if enabled and sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="tagging", smoothing=0.1)
    return Lines(total, enabled, every)


class Lines:
    """`tagging: 42% of 1.2 GiB read (12,345 docs, 98,765 tokens/s)` on stderr, at most every `every` seconds."""

    def __init__(self, total: int, enabled: bool, every: float):
        self.total, self.enabled, self.every = total, enabled, every
        self.done, self.postfix = 0, ""
        self.last = time.monotonic()

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self.last >= self.every:
            self.last = now
            share = f"{100 * self.done / self.total:.0f}% of " if self.total else ""
            extra = f" ({self.postfix})" if self.postfix else ""
            print(f"tagging: {share}{self.total / 2**30:.2f} GiB read{extra}", file=sys.stderr, flush=True)

    def set_postfix_str(self, text: str, refresh: bool = False) -> None:
        self.postfix = text

    def close(self) -> None:
        pass
