"""Pages a person reads: entities highlighted by type, scores on hover, errors marked. One self-contained file each:
inline CSS, no scripts, no network (MLflow shows HTML artifacts in a sandboxed frame, and a file may be mailed).

Two pages share this: the test set's errors page that training logs (`error_page`) and `ner.tag
output_format=html` (`document_html` per document, `page` around them).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from html import escape

from ner.data import schemes
from ner.evaluation.errors import findings

PALETTE = ("#8ecae6", "#ffb703", "#90be6d", "#f4a3c0", "#cdb4db", "#f9c74f", "#a3c4bc", "#ffadad")

CSS = """
body { font: 15px/1.9 system-ui, sans-serif; margin: 1.5em 2em; color: #222; }
h1 { font-size: 1.3em; } .meta { color: #666; font-size: 0.9em; }
mark { border-radius: 4px; padding: 1px 3px; color: inherit; }
mark::after { content: attr(data-type); font-size: 0.65em; font-weight: 600; margin-left: 3px; opacity: 0.7; }
.doc, .sent { border-bottom: 1px solid #eee; padding: 0.4em 0; white-space: pre-wrap; }
.sent .line { display: block; } .sent .who { display: inline-block; width: 3.2em; color: #888; font-size: 0.8em; }
mark.wrong { outline: 2px solid #c0392b; } mark.missed { background: none; border: 2px dashed #c0392b; }
.legend mark { margin-right: 0.5em; } .count { color: #c0392b; font-weight: 600; }
.src { color: #888; font-size: 0.75em; }
body:has(#only-errors:checked) .sent.ok { display: none; }
"""


def colours(types: Sequence[str]) -> str:
    """CSS giving each entity type its colour (`type_colour`)."""
    return "".join(f'mark[data-type="{escape(t)}"] {{ background: {type_colour(t)}; }}\n' for t in types)


TAG_PAGE_MARK = "<!-- ner.tag output_format=html -->"  # how a later `ner.tag` recognises this page as an output


KNOWN_TYPES = {  # CoNLL-2003 and WNUT-17 types: distinct colours; any other type gets one by its name's hash
    **dict.fromkeys(("PER", "person"), PALETTE[3]),
    **dict.fromkeys(("LOC", "location"), PALETTE[0]),
    **dict.fromkeys(("ORG", "corporation", "group"), PALETTE[2]),
    **dict.fromkeys(("MISC", "product"), PALETTE[1]),
    "creative-work": PALETTE[4],
}


def type_colour(typ: str) -> str:
    """A colour per entity type that depends on the name only: a page written in pieces (`ner.tag`, resumed) has
    no list of its types up front."""
    return KNOWN_TYPES.get(typ) or PALETTE[zlib.crc32(typ.encode()) % len(PALETTE)]


def page_start(title: str, meta: str = "") -> str:
    """The head of a page whose documents are written one by one (`ner.tag output_format=html`)."""
    return (
        f'<!DOCTYPE html>\n{TAG_PAGE_MARK}\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f'<style>{CSS}</style></head>\n<body>\n<h1>{escape(title)}</h1>\n<p class="meta">{meta}</p>\n'
    )


PAGE_END = "</body></html>\n"


def page(title: str, body: str, types: Sequence[str], meta: str = "") -> str:
    """A whole HTML document around `body`, with a legend of the entity types."""
    legend = "".join(f'<mark data-type="{escape(t)}">&nbsp;</mark>' for t in types)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{CSS}{colours(types)}</style></head>\n<body>\n<h1>{escape(title)}</h1>\n"
        f'<p class="meta">{meta}</p>\n<p class="legend">{legend}</p>\n{body}\n</body></html>\n'
    )


def mark(text: str, typ: str, title: str, css_class: str = "", colour: str = "") -> str:
    cls = f' class="{css_class}"' if css_class else ""
    style = f' style="background: {colour}"' if colour else ""
    return f'<mark{cls}{style} data-type="{escape(typ)}" title="{escape(title)}">{escape(text)}</mark>'


def document_html(text: str, entities: Sequence[dict], heading: str = "") -> str:
    """A document's text with its entities (character offsets, `ner.tag`'s records) marked in their type's colour;
    type and score on hover."""
    out, pos = [], 0
    for e in sorted(entities, key=lambda e: e["start"]):
        if e["start"] < pos:  # never happens with one tagger's output; keep the text whole if it does
            continue
        score = f" {e['score']:.2f}" if "score" in e else ""
        marked = mark(text[e["start"] : e["end"]], e["type"], f"{e['type']}{score}", colour=type_colour(e["type"]))
        out += [escape(text[pos : e["start"]]), marked]
        pos = e["end"]
    out.append(escape(text[pos:]))
    head = f'<div class="src">{escape(heading)}</div>' if heading else ""
    return f'<div class="doc">{head}{"".join(out)}</div>\n'


def _tokens_with(tokens: list[str], marks: dict[int, tuple[int, str, str, str]]) -> str:
    """Tokens joined by spaces; marks: first token -> (end, type, title, css class)."""
    out, i = [], 0
    while i < len(tokens):
        if i in marks:
            end, typ, title, cls = marks[i]
            out.append(mark(" ".join(tokens[i:end]), typ, title, cls))
            i = end
        else:
            out.append(escape(tokens[i]))
            i += 1
    return " ".join(out)


def error_page(
    tokens: Sequence[list[str]],
    gold: Sequence[list[str]],
    pred: Sequence[list[str]],
    scores: Sequence[dict[tuple[int, int], float]] | None = None,
    title: str = "test set: gold and predicted entities",
    limit: int | None = None,
) -> str:
    """Each sentence once if the prediction is right, else a gold line (missed entities dashed) and a predicted
    line (wrong ones outlined in red, what gold says on hover); `scores`: per sentence, (start, end) -> score."""
    by_sentence: dict[int, list] = {}
    for f in findings(gold, pred):
        by_sentence.setdefault(f.sentence, []).append(f)
    types = schemes.entity_types([t for seq in gold for t in seq] + [t for seq in pred for t in seq])
    n = len(tokens) if limit is None or limit < 0 else min(limit, len(tokens))
    rows, wrong_sentences = [], 0
    for i in range(n):
        found = by_sentence.get(i, [])
        gold_marks, pred_marks = {}, {}
        for f in found:
            if f.pred is not None:
                score = scores[i].get(f.pred[:2]) if scores else None
                shown = f" score {score:.2f}" if score is not None else ""
                said = f"; gold: {_describe(tokens[i], f.gold)}" if f.outcome != "correct" else ""
                cls = "" if f.outcome == "correct" else "wrong"
                pred_marks[f.pred[0]] = (f.pred[1], f.pred[2], f"{f.outcome}{shown}{said}", cls)
            if f.gold is not None:
                cls = "missed" if f.outcome == "missed" else ""
                gold_marks[f.gold[0]] = (f.gold[1], f.gold[2], f"gold {f.gold[2]}: {f.outcome}", cls)
        ok = all(f.outcome == "correct" for f in found)
        if ok:
            rows.append(f'<div class="sent ok">{_tokens_with(tokens[i], pred_marks)}</div>')
            continue
        wrong_sentences += 1
        errors = sum(f.outcome != "correct" for f in found)
        rows.append(
            f'<div class="sent err"><span class="line"><span class="who">gold</span>'
            f"{_tokens_with(tokens[i], gold_marks)}</span>"
            f'<span class="line"><span class="who">model</span>{_tokens_with(tokens[i], pred_marks)}'
            f' <span class="count">{errors} error{"s" if errors > 1 else ""}</span></span></div>'
        )
    meta = (
        f"{n} of {len(tokens)} sentences, {wrong_sentences} with errors. Red outline: a wrong prediction; dashed: a "
        'missed entity; hover for details. <label><input type="checkbox" id="only-errors"> only sentences with '
        "errors</label>"
    )
    return page(title, "\n".join(rows), types, meta)


def _describe(tokens: list[str], span: schemes.Span | None) -> str:
    return "none" if span is None else f"{' '.join(tokens[span[0] : span[1]])} ({span[2]})"
