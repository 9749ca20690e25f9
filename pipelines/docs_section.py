"""Benchmarks write their tables into docs between markers, so a rerun replaces its own section and no other."""

from __future__ import annotations

from pathlib import Path


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
