"""What every benchmark report shares: the machine it ran on, and its section of docs/benchmarks.md.

Benchmarks write their tables between markers, so a rerun replaces its own section and no other.
"""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

import torch


def replace_section(path: Path, begin: str, end: str, section: str, header: str) -> None:
    """Put `section` between the `begin`/`end` markers of `path` (appended, or a new file from `header`)."""
    text = path.read_text(encoding="utf-8") if path.is_file() else header
    block = f"{begin}\n{section.rstrip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def machine() -> dict:
    """CPU model, cores, torch and Python versions, date: printed with the tables and logged as params."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
    }
