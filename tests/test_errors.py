"""Error analysis and the HTML pages: outcomes on hand-made sentences, page structure through html.parser."""

from __future__ import annotations

from html.parser import HTMLParser

from ner.evaluation.errors import ErrorReport, findings
from ner.evaluation.html import document_html, error_page, page

TOKENS = [
    ["John", "Smith", "met", "Anna", "in", "Paris"],
    ["The", "New", "York", "Times", "said", "so"],
    ["Nothing", "here"],
]
GOLD = [
    ["B-PER", "I-PER", "O", "B-PER", "O", "B-LOC"],
    ["O", "B-ORG", "I-ORG", "I-ORG", "O", "O"],
    ["O", "O"],
]
PRED = [
    ["B-PER", "I-PER", "O", "B-ORG", "O", "O"],  # correct, wrong type, missed
    ["O", "B-LOC", "I-LOC", "O", "O", "B-MISC"],  # wrong type and boundary, spurious
    ["B-PER", "O"],  # spurious
]


def test_every_entity_gets_one_outcome():
    got = [(f.sentence, f.outcome) for f in findings(GOLD, PRED)]
    assert sorted(got) == sorted(
        [
            (0, "correct"),
            (0, "wrong type"),
            (0, "missed"),
            (1, "wrong type and boundary"),
            (1, "spurious"),
            (2, "spurious"),
        ]
    )
    boundary = findings([["B-PER", "I-PER", "O"]], [["B-PER", "O", "O"]])
    assert [f.outcome for f in boundary] == ["wrong boundary"]


def test_the_error_report_counts_per_type_and_splits_seen_from_unseen_words():
    report = ErrorReport.of(TOKENS, GOLD, PRED, train_words=["john", "smith", "anna", "new", "york", "times"])
    assert report.by_type["PER"]["correct"] == 1 and report.by_type["PER"]["wrong type"] == 1
    assert report.by_type["LOC"]["missed"] == 1 and report.by_type["ORG"]["wrong type and boundary"] == 1
    assert report.by_type["MISC"]["spurious"] == 1 and report.by_type["PER"]["spurious"] == 1
    seen, unseen = report.groups["all words seen"], report.groups["an unseen word"]
    assert (seen["true"], seen["tp"]) == (3, 1)  # John Smith (right), Anna, The New York Times
    assert unseen["true"] == 1  # Paris
    text = report.markdown(top=3)
    assert "| PER | 1 | 1 | 0 | 0 | 0 | 1 |" in text
    assert "met [{Anna}ORG]PER in" in text  # the example marks gold [..] and predicted {..}
    assert "The [{New York}LOC Times]ORG said" in text


class Structure(HTMLParser):
    """Collects what a self-contained page must (not) have."""

    def __init__(self):
        super().__init__()
        self.tags, self.marks, self.external, self.stack = [], [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "mark":
            self.marks.append(attrs)
        for key in ("src", "href"):
            if key in attrs:
                self.external.append(attrs[key])
        if tag not in ("meta", "input", "br"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack.pop() == tag, f"unbalanced </{tag}>"


def parsed(html: str) -> Structure:
    s = Structure()
    s.feed(html)
    s.close()
    assert not s.stack, f"unclosed {s.stack}"
    return s


def test_the_error_page_is_self_contained_and_marks_every_error():
    scores = [{(0, 2): 0.97, (3, 4): 0.41}, {(1, 3): 0.6, (5, 6): 0.2}, {(0, 1): 0.55}]
    html = error_page(TOKENS, GOLD, PRED, scores)
    s = parsed(html)
    assert "script" not in s.tags and not s.external  # no scripts, nothing fetched
    wrong = [m for m in s.marks if m.get("class") == "wrong"]
    missed = [m for m in s.marks if m.get("class") == "missed"]
    assert len(wrong) == 4 and len(missed) == 1  # wrong type, wrong type+boundary, two spurious; Paris missed
    assert any("score 0.41" in m["title"] and "gold: Anna (PER)" in m["title"] for m in wrong)


def test_a_tagged_document_page_shows_each_entity_with_its_type_and_score():
    text = "Anna & <Bob> went to Paris."
    entities = [
        {"text": "Anna", "type": "PER", "start": 0, "end": 4, "score": 0.91},
        {"text": "Bob", "type": "PER", "start": 8, "end": 11, "score": 0.5},
        {"text": "Paris", "type": "LOC", "start": 21, "end": 26, "score": 0.88},
    ]
    html = page("tagged", document_html(text, entities), ["LOC", "PER"])
    s = parsed(html)
    body = [m for m in s.marks if "title" in m]
    assert [(m["data-type"], m["title"]) for m in body] == [
        ("PER", "PER 0.91"),
        ("PER", "PER 0.50"),
        ("LOC", "LOC 0.88"),
    ]
    assert "&lt;" in html and "<Bob>" not in html  # the text is escaped, never markup
