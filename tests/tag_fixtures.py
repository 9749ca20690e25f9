"""Fixtures and helpers for the bulk-tagging tests: the tiny trained tagger as a folder, messy text, `run_tag`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from ner.tagging.pipeline import TagConfig, tag
from ner.tracking import model_uri
from tests.conftest import ROOT

# Lines that have broken other taggers' offsets: tabs, control characters, emoji (ZWJ, skin tone, flags),
# combining marks, right-to-left and CJK scripts, a line separator inside a line, NBSP, zero-width characters.
MESSY_LINES = [
    "Angela Merkel visited Paris on Monday .",
    "",
    "Peter\tvisited\tNew York\ton Monday\t.",
    "Mary Ann Lee \x07met\x00Boris\x1b in Germany .",
    "Peter 👍🏽 visited 🇩🇪 Germany 👨‍👩‍👧 on Monday 😀.",
    "   ",
    "Москва и Peter visited Paris . 東京でBoris . مرحبا Germany .",
    "Cafe\u0301 Ame\u0301lie : Peter visited South Africa\u2028on Monday .",
    "Shares of Apple rose 3 percent in\u00a0Germany\u200b.\ufeff",
    "\x85Boris left Reuters .",
]


@pytest.fixture(scope="session")
def tiny_model_dir(trained_run, tmp_path_factory) -> Path:
    """The tiny trained tagger of `trained_run` as a plain folder (tagger.json + weights.pt)."""
    run_id, uri, _ = trained_run
    dst = tmp_path_factory.mktemp("tagger") / "tagger"
    with model_uri.resolve(f"runs:/{run_id}/model", uri) as folder:
        shutil.copytree(folder, dst)
    return dst


def tag_config(**overrides) -> TagConfig:
    """The real conf/tag/tag.yaml with `overrides` (values, not strings), quiet, in-process, single-threaded."""
    overrides = {"progress": False, "threads": 1, "workers": 0, **overrides}
    with initialize_config_dir(config_dir=str(ROOT / "conf" / "tag"), version_base="1.3"):
        cfg = compose(config_name="tag", overrides=[f"{k}={_hydra_value(v)}" for k, v in overrides.items()])
    from omegaconf import OmegaConf

    return TagConfig(**OmegaConf.to_container(cfg, resolve=True))


def run_tag(**overrides) -> dict:
    return tag(tag_config(**overrides))


def _hydra_value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str | Path):
        return json.dumps(str(value))  # quoted: paths with = , or spaces stay one value
    return str(value)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]


def assert_offsets_exact(record: dict) -> None:
    """Every entity and token slices the record's text exactly; entities lie on token boundaries."""
    text = record["text"]
    bounds = set()
    for sent in record["sentences"]:
        assert len(sent["tokens"]) == len(sent["offsets"]) == len(sent["tags"]) > 0
        for token, (start, end) in zip(sent["tokens"], sent["offsets"], strict=True):
            assert text[start:end] == token
            bounds.update((("s", start), ("e", end)))
        assert (sent["start"], sent["end"]) == (sent["offsets"][0][0], sent["offsets"][-1][1])
    for ent in record["entities"]:
        assert text[ent["start"] : ent["end"]] == ent["text"]
        assert ("s", ent["start"]) in bounds and ("e", ent["end"]) in bounds
