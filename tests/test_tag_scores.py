"""Entity scores through `ner.tag`: in every record, filtered by `min_score`, on an HTML page; errors of gold input."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from ner.data import schemes
from ner.data.conll import read_conll
from ner.evaluation import metrics
from ner.model.engine import Engine
from ner.tagging.files import TagError
from ner.tracking.model_uri import load_folder
from tests.conftest import TINY
from tests.tag_fixtures import MESSY_LINES, read_jsonl, run_tag, tiny_model_dir  # noqa: F401 (fixture)


@pytest.fixture
def news(tmp_path):
    path = tmp_path / "news.txt"
    path.write_text("\n".join(MESSY_LINES) + "\n", encoding="utf-8")
    return path


def test_every_entity_has_a_score_and_min_score_keeps_only_the_sure_ones(tiny_model_dir, news, tmp_path):  # noqa: F811
    run_tag(model=tiny_model_dir, input=news, output=tmp_path / "all.jsonl", one_per_line=True)
    records = read_jsonl(tmp_path / "all.jsonl")
    entities = [e for r in records for e in r["entities"]]
    assert entities and all(0.0 <= e["score"] <= 1.0 for e in entities)
    distinct = sorted({e["score"] for e in entities})  # written rounded: cut between two, never at one
    cut = (distinct[len(distinct) // 2 - 1] + distinct[len(distinct) // 2]) / 2
    run_tag(model=tiny_model_dir, input=news, output=tmp_path / "sure.jsonl", one_per_line=True, min_score=cut)
    sure = read_jsonl(tmp_path / "sure.jsonl")
    assert [e for r in sure for e in r["entities"]] == [e for e in entities if e["score"] >= cut]
    for before, after in zip(records, sure, strict=True):  # a dropped entity's tokens are O in the tags too
        kept = {(e["start"], e["end"]) for e in after["entities"]}
        for sent_before, sent_after in zip(before["sentences"], after["sentences"], strict=True):
            for (start, end), old, new in zip(
                sent_before["offsets"], sent_before["tags"], sent_after["tags"], strict=True
            ):
                inside = any(a <= start and end <= b for a, b in kept)
                assert new == (old if inside else "O")
    run_tag(model=tiny_model_dir, input=news, output=tmp_path / "off.jsonl", one_per_line=True, scores=False)
    assert all("score" not in e for r in read_jsonl(tmp_path / "off.jsonl") for e in r["entities"])


def test_a_min_score_outside_0_1_or_without_scores_is_one_line(tiny_model_dir, news, tmp_path):  # noqa: F811
    with pytest.raises(TagError, match="min_score=1.5 must be between 0 and 1"):
        run_tag(model=tiny_model_dir, input=news, output=tmp_path / "o.jsonl", min_score=1.5)
    with pytest.raises(TagError, match="needs the entity scores"):
        run_tag(model=tiny_model_dir, input=news, output=tmp_path / "o.jsonl", min_score=0.5, scores=False)


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.marks, self.docs, self.external = [], [], 0, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        self.marks += [attrs] if tag == "mark" else []
        self.docs += tag == "div" and attrs.get("class") == "doc"
        self.external += [attrs[k] for k in ("src", "href") if k in attrs]


def test_the_html_output_is_one_self_contained_page_with_every_entity(tiny_model_dir, news, tmp_path):  # noqa: F811
    run_tag(model=tiny_model_dir, input=news, output=tmp_path / "o.jsonl", one_per_line=True)
    records = read_jsonl(tmp_path / "o.jsonl")
    run_tag(model=tiny_model_dir, input=news, output=tmp_path / "o.html", one_per_line=True, output_format="html")
    text = (tmp_path / "o.html").read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    page = Page()
    page.feed(text)
    assert "script" not in page.tags and not page.external
    assert page.docs == len(records)
    entities = [e for r in records for e in r["entities"]]
    assert [(m["data-type"], m["title"]) for m in page.marks] == [
        (e["type"], f"{e['type']} {e['score']:.2f}") for e in entities
    ]


def test_gold_conll_input_is_scored_strictly_on_the_models_own_tags_and_its_errors_written(tiny_model_dir, tmp_path):  # noqa: F811
    summary = run_tag(model=tiny_model_dir, input=TINY / "test.txt", input_format="conll", output=tmp_path / "o.jsonl")
    sentences = read_conll(TINY / "test.txt")
    gold = [schemes.convert(s.tags, "iob2") for s in sentences]
    engine = Engine(load_folder(tiny_model_dir))
    tagged = engine.tag_sentences([s.tokens for s in sentences])
    expected = metrics.score(gold, tagged.tags(engine.labels), tagged.tags(engine.labels, own=True))
    assert summary["scores"] == pytest.approx({k: v for k, v in expected.items() if k in summary["scores"]})
    report = (tmp_path / "o.jsonl.errors.md").read_text(encoding="utf-8")
    assert summary["errors_report"] == str(tmp_path / "o.jsonl.errors.md")
    assert "## Entity outcomes per type" in report and "all words seen" in report
