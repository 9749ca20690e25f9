"""Tag schemes (IOB1, IOB2, BIOES): detection, conversion and entity spans.

Everything goes through entity spans: a sequence is read into spans the way conlleval reads it, and spans are
written out in the target scheme. That makes every conversion total (invalid input is repaired the conlleval way,
never crashed on) and makes round trips easy to test.
"""

from __future__ import annotations

import re

SCHEMES = ("iob1", "iob2", "bioes")
TAG_SHAPE = re.compile(r"^(O|[BIES]-.+)$")

Span = tuple[int, int, str]  # (start token, end token exclusive, type)


def split_tag(tag: str) -> tuple[str, str]:
    """'B-PER' -> ('B', 'PER'); 'O' -> ('O', '')."""
    if tag == "O":
        return "O", ""
    return tag[0], tag[2:]


def spans(tags: list[str]) -> list[Span]:
    """Entity spans of a tag sequence in any scheme, read like conlleval reads them.

    A chunk starts at B-/S-, at an I-/E- whose type differs from the previous tag's, or at an I-/E- after O, E-
    or S-; it ends before O, B-, S- or a type change, and after E-/S-. So IOB1, IOB2 and BIOES all read the same,
    and an invalid IOB2 sequence such as `O I-PER` yields the entity conlleval would count.
    """
    out: list[Span] = []
    start, etype = -1, ""
    prev_prefix = "O"
    for i, tag in enumerate(tags):
        prefix, typ = split_tag(tag)
        begins = prefix in ("B", "S") or (prefix in ("I", "E") and (typ != etype or prev_prefix in ("O", "E", "S")))
        if start >= 0 and (prefix == "O" or begins):
            out.append((start, i, etype))
            start = -1
        if begins:
            start, etype = i, typ
        if prefix in ("E", "S") and start >= 0:
            out.append((start, i + 1, etype))
            start = -1
        prev_prefix = prefix
        if prefix == "O":
            etype = ""
    if start >= 0:
        out.append((start, len(tags), etype))
    return out


def from_spans(span_list: list[Span], length: int, scheme: str) -> list[str]:
    """Write spans as a tag sequence of `length` tokens in `scheme`."""
    tags = ["O"] * length
    prev_end, prev_type = -1, ""
    for start, end, typ in span_list:
        if scheme == "bioes" and end - start == 1:
            tags[start] = f"S-{typ}"
            prev_end, prev_type = end, typ
            continue
        first = "B"
        if scheme == "iob1" and not (prev_end == start and prev_type == typ):
            first = "I"
        tags[start] = f"{first}-{typ}"
        for i in range(start + 1, end):
            tags[i] = f"I-{typ}"
        if scheme == "bioes":
            tags[end - 1] = f"E-{typ}"
        prev_end, prev_type = end, typ
    return tags


def convert(tags: list[str], scheme: str) -> list[str]:
    """Convert a tag sequence in any scheme to `scheme` (iob1, iob2 or bioes)."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown tag scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    return from_spans(spans(tags), len(tags), scheme)


def is_valid(tags: list[str], scheme: str) -> bool:
    """True when writing the sequence's spans back in `scheme` gives the same tags (no repair needed)."""
    return convert(tags, scheme) == list(tags)


def detect(sentences: list[list[str]]) -> str:
    """Guess the scheme of a corpus: E-/S- means BIOES; an I- that starts a chunk means IOB1; else IOB2."""
    has_b = False
    for tags in sentences:
        prev = "O"
        for tag in tags:
            prefix, typ = split_tag(tag)
            if prefix in ("E", "S"):
                return "bioes"
            if prefix == "B":
                has_b = True
            if prefix == "I" and (prev == "O" or split_tag(prev)[1] != typ):
                return "iob1"
            prev = tag
    return "iob2" if has_b else "iob1"


def entity_types(labels: list[str]) -> list[str]:
    """Sorted entity types found in a label list."""
    return sorted({split_tag(t)[1] for t in labels if t != "O"})


def labels_for(types: list[str], scheme: str) -> list[str]:
    """Every tag of `scheme` over `types`, O first, in a stable order."""
    prefixes = {"iob1": "BI", "iob2": "BI", "bioes": "BIES"}[scheme]
    return ["O"] + [f"{p}-{t}" for t in types for p in prefixes]
