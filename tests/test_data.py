import shutil

import datasets
import pytest

from ner.data.conll import DataError
from ner.data.corpus import DataConfig, load_corpus, tag_strings
from tests.conftest import SHARED


def test_local_folder_becomes_a_datasetdict_with_iob2_classlabels(tiny_dir, tmp_path):
    corpus, report = load_corpus(DataConfig(path=str(tiny_dir), cache_dir=str(tmp_path)))
    assert set(corpus) == {"train", "validation", "test"}
    assert isinstance(corpus["train"].features["ner_tags"].feature, datasets.ClassLabel)
    assert report["source_scheme"] == "iob1"
    tags = tag_strings(corpus["train"])
    assert all(not t.startswith("I-") or i > 0 for seq in tags for i, t in enumerate(seq))
    assert report["splits"]["train"]["sentences"] == 61


def test_second_load_comes_from_the_cache_and_an_edit_invalidates_it(tiny_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_dir, data)
    cfg = DataConfig(path=str(data), cache_dir=str(tmp_path / "cache"))
    first, _ = load_corpus(cfg)
    second, _ = load_corpus(cfg)
    assert second["train"].cache_files, "second load should be memory-mapped from the Arrow cache"
    assert second["train"]["tokens"] == first["train"]["tokens"]
    with open(data / "train.txt", "a") as f:
        f.write("\nNew NNP I-NP I-ORG\n")
    third, _ = load_corpus(cfg)
    assert len(third["train"]) == len(first["train"]) + 1


def test_eng_file_names_are_accepted(tiny_dir, tmp_path):
    for src, dst in (("train.txt", "eng.train"), ("valid.txt", "eng.testa"), ("test.txt", "eng.testb")):
        shutil.copy(tiny_dir / src, tmp_path / dst)
    corpus, _ = load_corpus(DataConfig(path=str(tmp_path), cache_dir=str(tmp_path / "c")))
    assert set(corpus) == {"train", "validation", "test"}


def test_empty_split_is_an_error_naming_the_file(tiny_dir, tmp_path):
    shutil.copytree(tiny_dir, tmp_path / "d")
    (tmp_path / "d" / "test.txt").write_text("-DOCSTART- -X- -X- O\n\n")
    with pytest.raises(DataError, match="test.txt: the file holds no sentences"):
        load_corpus(DataConfig(path=str(tmp_path / "d"), cache_dir=str(tmp_path / "c")))


def test_split_without_entities_is_an_error(tiny_dir, tmp_path):
    shutil.copytree(tiny_dir, tmp_path / "d")
    (tmp_path / "d" / "valid.txt").write_text("Nothing NN O O\nhere NN O O\n")
    with pytest.raises(DataError, match="valid.txt: the split holds no entities"):
        load_corpus(DataConfig(path=str(tmp_path / "d"), cache_dir=str(tmp_path / "c")))


def test_labels_only_in_eval_are_reported_not_crashed_on(tiny_dir, tmp_path):
    shutil.copytree(tiny_dir, tmp_path / "d")
    with open(tmp_path / "d" / "test.txt", "a") as f:
        f.write("\nNASA NNP I-NP I-SPACE\n")
    _, report = load_corpus(DataConfig(path=str(tmp_path / "d"), cache_dir=str(tmp_path / "c")))
    assert report["labels_only_in_eval"] == ["B-SPACE"]


def test_invalid_sequences_are_repaired_or_rejected_by_config(tmp_path):
    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.txt").write_text("EU B-ORG\nsaid O\nPeter I-PER\n")
    _, report = load_corpus(DataConfig(path=str(tmp_path), scheme="iob2", cache_dir=str(tmp_path / "c")))
    assert report["splits"]["train"]["invalid_sequences_repaired"] == 1
    with pytest.raises(DataError, match=r"train.txt:1: invalid IOB2 tag sequence"):
        load_corpus(DataConfig(path=str(tmp_path), scheme="iob2", on_invalid="error", cache_dir=str(tmp_path / "c")))


def test_hub_id_offline_fails_fast_with_a_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="data.path=../shared/data/conll2003"):
        load_corpus(DataConfig(path="eriktks/conll2003", cache_dir=str(tmp_path)))


@pytest.mark.skipif(not (SHARED / "conll2003").is_dir(), reason="../shared/data/conll2003 is not present")
def test_real_conll2003_counts_match_the_shared_task(tmp_path):
    corpus, report = load_corpus(DataConfig(path=str(SHARED / "conll2003"), cache_dir=str(tmp_path)))
    stats = report["splits"]
    assert [stats[s]["sentences"] for s in ("train", "validation", "test")] == [14041, 3250, 3453]
    assert [stats[s]["entities"] for s in ("train", "validation", "test")] == [23499, 5942, 5648]
    assert report["source_scheme"] == "iob1"


def test_a_folder_without_a_validation_file_holds_dev_out_of_train_and_says_so(tiny_dir, tmp_path, capsys):
    for name in ("train.txt", "test.txt"):
        shutil.copy(tiny_dir / name, tmp_path / name)
    corpus, report = load_corpus(DataConfig(path=str(tmp_path), cache_dir=str(tmp_path / "c")))
    assert set(corpus) == {"train", "validation", "test"}
    assert len(corpus["train"]) + len(corpus["validation"]) == 61 and len(corpus["validation"]) >= 6
    from ner.data.conll import read_conll

    whole = [s.tokens for s in read_conll(tmp_path / "train.txt")]
    assert list(corpus["train"]["tokens"]) + list(corpus["validation"]["tokens"]) == whole  # a cut: none in both
    note = capsys.readouterr().out
    assert f"note: {tmp_path} has no validation file" in note and "data.dev_from_train=0.1" in note
    with pytest.raises(DataError, match="no validation file .*data.dev_from_train=0.1"):
        load_corpus(DataConfig(path=str(tmp_path), cache_dir=str(tmp_path / "c"), dev_from_train=0.0))


@pytest.mark.parametrize(
    "bad", [{"max_train_samples": -1}, {"max_eval_samples": -1}, {"dev_from_train": 1.0}, {"dev_from_train": -0.1}]
)
def test_values_that_make_a_run_meaningless_are_refused(bad):
    from ner.config import ConfigError

    with pytest.raises(ConfigError, match=f"data.{next(iter(bad))}="):
        DataConfig(path="x", **bad)
