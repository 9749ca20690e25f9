"""Corpus loading: local CoNLL folders or Hub ids -> a `DatasetDict` of `tokens`, IOB2 `ner_tags` (ClassLabel)
and `document` (which -DOCSTART- section each sentence is from; Hub corpora have none, so one per sentence).

Tags are stored in IOB2 whatever the source scheme, because that is what scores are computed on; the training
scheme (BIOES by default) is derived from it when batches are built. Parsed corpora are saved with
`save_to_disk` under a key made from the files' SHA-256, so a second run loads Arrow files instead of re-parsing,
and an edited file can never be served from a stale cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import datasets

from ner import config
from ner.data import schemes
from ner.data.conll import DataError, read_conll

READER_VERSION = "3"  # 2: a `document` column; 3: dev held out of train when there is no validation file
SPLIT_FILES = {
    "train": ("train.txt", "eng.train", "train.conll", "train.tsv"),
    "validation": ("valid.txt", "dev.txt", "validation.txt", "eng.testa", "valid.conll", "dev.conll", "dev.tsv"),
    "test": ("test.txt", "eng.testb", "test.conll", "test.tsv"),
}


@dataclass
class DataConfig:
    path: str  # a folder of CoNLL column files, or a Hugging Face Hub dataset id
    scheme: str = "auto"  # source tag scheme: auto | iob1 | iob2 | bioes
    train_scheme: str = "bioes"  # scheme the model is trained on: iob2 | bioes
    tag_column: int = -1  # column holding the tag in the files
    token_column: int = 0  # column holding the token
    on_invalid: str = "repair"  # invalid tag sequences: repair (read as conlleval does) | error
    max_train_samples: int = 0  # keep only the first N training sentences (0 = all); for smoke runs
    max_eval_samples: int = 0  # same for validation and test
    dev_from_train: float = 0.1  # no validation file: hold out this share of the training sentences as dev (0 = refuse)
    cache_dir: str | None = None  # where parsed corpora are cached (default: the datasets cache)

    def __post_init__(self) -> None:
        config.choice("data.scheme", self.scheme, ("auto", *schemes.SCHEMES))
        config.choice("data.train_scheme", self.train_scheme, ("iob2", "bioes"))
        config.choice("data.on_invalid", self.on_invalid, ("repair", "error"))
        config.at_least("data.max_train_samples", self.max_train_samples, 0)
        config.at_least("data.max_eval_samples", self.max_eval_samples, 0)
        if not 0.0 <= self.dev_from_train < 1.0:
            raise config.ConfigError(f"data.dev_from_train={self.dev_from_train} must be in [0, 1)")


def load_corpus(cfg: DataConfig) -> tuple[datasets.DatasetDict, dict]:
    """The corpus as a DatasetDict plus a data report (counts, scheme, repairs, labels seen only in eval)."""
    if Path(cfg.path).expanduser().exists():
        corpus, report = _load_local(cfg)
    else:
        corpus, report = _load_hub(cfg)
    for split, limit in (
        ("train", cfg.max_train_samples),
        ("validation", cfg.max_eval_samples),
        ("test", cfg.max_eval_samples),
    ):
        if limit and split in corpus and len(corpus[split]) > limit:
            corpus[split] = corpus[split].select(range(limit))
            report = {**report, "limited": {**report.get("limited", {}), split: limit}}
    if "held_out" in report:  # said before anything trains, also when the corpus comes from the cache
        held = report["held_out"]
        print(
            f"note: {cfg.path} has no validation file ({', '.join(SPLIT_FILES['validation'])}): dev is the last "
            f"{held['sentences']} of {held['of']} training sentences (data.dev_from_train={cfg.dev_from_train}), "
            "which are not trained on",
            flush=True,
        )
    return corpus, report


def label_names(ds: datasets.Dataset) -> list[str]:
    return ds.features["ner_tags"].feature.names


def tag_strings(ds: datasets.Dataset) -> list[list[str]]:
    names = label_names(ds)
    return [[names[i] for i in seq] for seq in ds["ner_tags"]]


@dataclass
class Sentences:
    """One split as plain lists: what the inference engine reads (tokens, documents) and what it is scored on."""

    tokens: list[list[str]]
    gold: list[list[str]]  # IOB2 tags
    documents: list[int]  # the -DOCSTART- section of each sentence (one per sentence where there are none)

    @classmethod
    def of(cls, ds: datasets.Dataset) -> Sentences:
        return cls(ds["tokens"], tag_strings(ds), ds["document"])


def with_dev(corpus: datasets.DatasetDict) -> datasets.DatasetDict:
    """Train and dev as one training split (their documents kept apart), and no dev split: what
    `trainer.train_with_dev` trains on (Flair's train_with_dev; Chiu & Nichols 2016)."""
    if "validation" not in corpus:
        raise config.ConfigError("trainer.train_with_dev=true, but the data has no dev split to add to training")
    train, dev = corpus["train"], corpus["validation"]
    shift = max(train["document"], default=-1) + 1
    dev = dev.map(lambda row: {"document": row["document"] + shift}, load_from_cache_file=False)
    return datasets.DatasetDict(train=datasets.concatenate_datasets([train, dev]), test=corpus["test"])


def _files(folder: Path) -> dict[str, Path]:
    found = {}
    for split, names in SPLIT_FILES.items():
        for name in names:
            if (folder / name).is_file():
                found[split] = folder / name
                break
    if "train" not in found:
        expected = ", ".join(SPLIT_FILES["train"])
        raise DataError(folder, None, f"no training file found (expected one of: {expected})")
    return found


def _load_local(cfg: DataConfig) -> tuple[datasets.DatasetDict, dict]:
    folder = Path(cfg.path).expanduser().resolve()
    files = _files(folder)
    key = _cache_key(files, cfg)
    cache = Path(cfg.cache_dir or datasets.config.HF_DATASETS_CACHE).expanduser() / "ner-conll" / key
    if (cache / "report.json").is_file():
        return datasets.load_from_disk(str(cache / "corpus")), json.loads((cache / "report.json").read_text())
    corpus, report = _parse(files, cfg)
    report["fingerprint"] = key
    try:
        datasets.disable_progress_bars()
        corpus.save_to_disk(str(cache / "corpus"))
        (cache / "report.json").write_text(json.dumps(report))
    except OSError as err:  # a read-only cache is not worth failing a run for
        report["cache_error"] = str(err)
    return corpus, report


def _cache_key(files: dict[str, Path], cfg: DataConfig) -> str:
    held = cfg.dev_from_train if "validation" not in files else ""
    digest = hashlib.sha256(
        f"{READER_VERSION}|{cfg.scheme}|{cfg.tag_column}|{cfg.token_column}|{cfg.on_invalid}|{held}".encode()
    )
    for split in sorted(files):
        digest.update(split.encode())
        digest.update(hashlib.sha256(files[split].read_bytes()).digest())
    return digest.hexdigest()[:24]


def _parse(files: dict[str, Path], cfg: DataConfig) -> tuple[datasets.DatasetDict, dict]:
    raw = {split: read_conll(path, cfg.tag_column, cfg.token_column) for split, path in files.items()}
    scheme = cfg.scheme if cfg.scheme != "auto" else schemes.detect([s.tags for s in raw["train"]])
    report = {"source_scheme": scheme, "files": {k: str(v) for k, v in files.items()}, "splits": {}}
    if "validation" not in raw:
        raw["train"], raw["validation"] = _hold_out(raw["train"], cfg.dev_from_train, files["train"])
        files = {**files, "validation": files["train"]}
        report["held_out"] = {"sentences": len(raw["validation"]), "of": len(raw["train"]) + len(raw["validation"])}
    rows = {}
    for split, sents in raw.items():
        if not sents:
            raise DataError(files[split], None, "the file holds no sentences")
        converted, repaired = [], 0
        for sent in sents:
            if not schemes.is_valid(sent.tags, scheme):
                if cfg.on_invalid == "error":
                    raise DataError(
                        files[split],
                        sent.line,
                        f"invalid {scheme.upper()} tag sequence "
                        f"{' '.join(sent.tags)} (set data.on_invalid=repair to read it as conlleval)",
                    )
                repaired += 1
            converted.append(schemes.convert(sent.tags, "iob2"))
        rows[split] = {"tokens": [s.tokens for s in sents], "tags": converted, "document": [s.document for s in sents]}
        report["splits"][split] = _split_stats(rows[split], repaired)
        if not report["splits"][split]["entities"]:
            raise DataError(files[split], None, "the split holds no entities: wrong tag column or wrong file?")
    corpus = _to_dataset_dict(rows)
    report["labels_only_in_eval"] = _eval_only(rows)
    return corpus, report


def _hold_out(sents: list, share: float, path: Path) -> tuple[list, list]:
    """(train, dev): the last `share` of the sentences, taken whole from the last documents where there are several
    -DOCSTART- sections (a document is never split across the two); a DataError if that leaves either empty.

    Without a dev split the run would choose its epoch on the data it trains on, and report no dev score.
    """
    if not share:
        raise DataError(
            path.parent,
            None,
            "no validation file (valid.txt, dev.txt, ...): add one, or hold part of the training "
            "file out as dev with data.dev_from_train=0.1",
        )
    cut = len(sents) - max(1, round(share * len(sents)))
    while 0 < cut < len(sents) and sents[cut].document == sents[cut - 1].document:
        cut += 1  # to the next document boundary (one document: a plain cut)
    if cut >= len(sents):
        cut = len(sents) - max(1, round(share * len(sents)))
    if cut <= 0:
        raise DataError(path, None, f"too few sentences ({len(sents)}) to hold out a dev share; add a validation file")
    return sents[:cut], sents[cut:]


def _to_dataset_dict(rows: dict) -> datasets.DatasetDict:
    names = _names(rows)
    index = {n: i for i, n in enumerate(names)}
    features = datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("string")),
            "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names)),
            "document": datasets.Value("int32"),
        }
    )
    return datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(
                {
                    "tokens": r["tokens"],
                    "ner_tags": [[index[t] for t in seq] for seq in r["tags"]],
                    "document": r["document"],
                },
                features=features,
                split=split,
            )
            for split, r in rows.items()
        }
    )


def _names(rows: dict) -> list[str]:
    tags = {t for r in rows.values() for seq in r["tags"] for t in seq}
    return ["O"] + sorted(tags - {"O"}, key=lambda t: (t[2:], t[0]))


def _eval_only(rows: dict) -> list[str]:
    train = {t for seq in rows["train"]["tags"] for t in seq}
    return sorted({t for s, r in rows.items() if s != "train" for seq in r["tags"] for t in seq} - train)


def _split_stats(rows: dict, repaired: int) -> dict:
    types = Counter(typ for seq in rows["tags"] for _, _, typ in schemes.spans(seq))
    return {
        "sentences": len(rows["tokens"]),
        "documents": len(set(rows["document"])),
        "tokens": sum(map(len, rows["tokens"])),
        "entities": sum(types.values()),
        "entities_by_type": dict(sorted(types.items())),
        "invalid_sequences_repaired": repaired,
    }


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _load_hub(cfg: DataConfig) -> tuple[datasets.DatasetDict, dict]:
    hint = (
        f"data.path={cfg.path!r} is not a local folder and the Hugging Face Hub cannot be reached. "
        "Point data.path at a folder of CoNLL column files (train.txt, valid.txt, test.txt), e.g. "
        "data.path=../shared/data/conll2003"
    )
    if not _hub_reachable():
        os.environ["HF_HUB_OFFLINE"] = "1"
        raise DataError(cfg.path, None, hint)
    try:
        hub = datasets.load_dataset(cfg.path)
    except (ConnectionError, OSError) as err:
        raise DataError(cfg.path, None, f"{hint} ({type(err).__name__}: {err})") from None
    rows = {}
    for split in ("train", "validation", "test"):
        if split not in hub:
            continue
        names = hub[split].features["ner_tags"].feature.names
        rows[split] = {
            "tokens": hub[split]["tokens"],
            "tags": [schemes.convert([names[i] for i in seq], "iob2") for seq in hub[split]["ner_tags"]],
            "document": list(range(len(hub[split]))),
        }
    if "train" not in rows:
        raise DataError(cfg.path, None, "the Hub dataset has no 'train' split")
    corpus = _to_dataset_dict(rows)
    report = {
        "source_scheme": "hub",
        "fingerprint": hub["train"]._fingerprint,
        "splits": {s: _split_stats(r, 0) for s, r in rows.items()},
        "labels_only_in_eval": _eval_only(rows),
    }
    return corpus, report
