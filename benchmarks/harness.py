"""What every benchmark shares, written once: the config and training sample, the timed training step, the tagging
input, `ner.tag` in a child process (also against an older commit), the MLflow run and the docs section.

- `training_sample`: the real composed config of conf/ (`compose`), the model, vocabularies and corpus that
  `ner.training.pipeline.build` makes from it, and the first N training sentences encoded as training encodes them;
- `time_epoch`: the real training step, `ner.training.trainer.train_epoch`, timed from the initial weights (wall
  clock and CPU time); `time_ceiling`: a bare `nn.LSTM` of given sizes doing forward + backward + step on the same
  batches, the ceiling the training rows are divided by;
- `write_input`, `conll_articles`: the tagging input, CoNLL-2003 articles detokenised one per line;
  `add_tag_args`, `default_model`: the model and input options of the tagging benchmarks;
- `run_tag`: `ner.tagging.pipeline.tag` on the composed `conf/tag` config in a child process
  (benchmarks/tag_child.py), its summary read back as JSON: data, never a printed line;
- `one_core_tagging`, `alternate`: the CPU-time benchmarks' input and settings, and variants of them tagged in
  turn, timed in CPU seconds (benchmarks.scores, benchmarks.model_speed);
- `worktree`, `compare`: the same child against another commit's code (a `git worktree`), old and new rounds in
  turn, best of each kept, tokens/s and the new/old ratio printed;
- `log_run`: one run of MLflow experiment `benchmarks` (the store: --tracking-uri, else MLFLOW_TRACKING_URI, else
  the project store, as everywhere in the project: `store_uri`);
- `machine`, `command`, `write_section`: what a report says about where and how it ran, and its section of a docs
  file between `<!-- NAME:begin -->` and `<!-- NAME:end -->` markers, so a rerun replaces its own section only.

Past 400 lines on purpose: it is the one place these shared pieces live, so that no benchmark keeps a copy;
each section below (docs, MLflow, the training side, the tagging side, comparing commits) is one of them.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import random
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CONLL = DATA / "conll2003"
CONLL_TRAIN = CONLL / "train.txt"
DOCS = ROOT / "docs" / "benchmarks.md"
DOCS_HEADER = """# Benchmarks

Numbers in this file are written by the benchmarks (`python -m benchmarks.<name>`), never typed by hand: each
section sits between `<!-- NAME:begin -->` and `<!-- NAME:end -->` markers and a rerun of its benchmark replaces it.
"""
TAG_CHILD = Path(__file__).resolve().parent / "tag_child.py"
WARMUP_SENTENCES = 200  # untimed training before each timed epoch: 20 batches of the default 10
HOW_TO_GET_A_MODEL = """no model found: pass --model runs:/<run_id>/model (or models:/..., best:<experiment>, a folder).
To make one in ./mlruns:
  python -m ner.train                                   # the default model (BiLSTM-CNN-CRF, GloVe 50d)
  python -m ner.train trainer.max_epochs=1 tracking.experiment=bench-tmp trainer.threads=1   # same size, ~2 min"""


# --- where and how a benchmark ran, and its section of the docs ------------------------------------------------------


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


def load_average(values: Sequence[float] | None = None) -> str:
    """'0.85, 1.37, 1.64': the 1, 5 and 15-minute load averages (now, unless given)."""
    return ", ".join(f"{x:.2f}" for x in (os.getloadavg() if values is None else values))


def command(name: str, argv: Sequence[str] | None = None, drop: Sequence[str] = ()) -> str:
    """`python -m benchmarks.<name> <args>` as it was run, for a report: options in `drop` (with their values) and
    a --tracking-uri naming the project store (the default) left out, paths below the project root relative."""
    args = list(sys.argv[1:] if argv is None else argv)
    kept, skip = [], False
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        option, has_value, value = arg.partition("=")
        value = value if has_value else _at(args, i + 1)
        if option in drop or (option == "--tracking-uri" and value == project_store()):
            skip = not has_value
            continue
        kept.append(arg.replace(f"{ROOT}{os.sep}", ""))
    return " ".join(["python", "-m", f"benchmarks.{name}", *map(shlex.quote, kept)])


def _at(items: list[str], i: int) -> str | None:
    return items[i] if i < len(items) else None


def write_section(name: str, text: str, path: Path = DOCS, header: str = DOCS_HEADER) -> None:
    """Put `text` between the `name` markers of `path` (appended, or a new file starting with `header`)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    content = path.read_text(encoding="utf-8") if path.is_file() else header
    block = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in content and end in content:
        head, rest = content.split(begin, 1)
        content = head + block + rest.split(end, 1)[1]
    else:
        content = content.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    print(f"wrote the {name} section of {_shown(path)}")


def _shown(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


# --- MLflow ----------------------------------------------------------------------------------------------------------


def store_uri(explicit: str | None = None) -> str:
    """The MLflow store a benchmark reads and writes, as every tool of the project picks it (`store.store_uri`):
    `explicit` (--tracking-uri), else MLFLOW_TRACKING_URI, else the project store, mlruns/ of the project root."""
    from ner.tracking import store

    return store.store_uri(explicit, ROOT)


def project_store() -> str:
    from ner.tracking import store

    return store.default_store(ROOT)[0]


def connect(tracking_uri: str | None, experiment: str) -> str:
    """Point MLflow at the store (as `store_uri` resolves it) and `experiment`; returns the resolved URI."""
    from ner.tracking import store

    uri = store_uri(tracking_uri)
    store.connect(store.TrackingConfig(uri=uri, experiment=experiment))
    return uri


def log_run(
    name: str,
    tracking_uri: str | None,
    params: dict,
    metrics: dict[str, float],
    section: str,
    artifacts: Sequence[Path] = (),
) -> str:
    """One run `name` of experiment `benchmarks`: params, metrics, the report as `<name>.md` and any artifacts."""
    import mlflow

    from ner.tracking import store

    uri = store_uri(tracking_uri)
    cfg = store.TrackingConfig(uri=uri, experiment="benchmarks", run_name=name, log_model=False)
    with store.run(cfg, name, {"benchmark": name, "git_commit": store.git_commit()}) as active:
        mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})  # MLflow's limit on a param value
        mlflow.log_metrics({k: v for k, v in metrics.items() if v == v})  # NaN (a row not measured): left out
        mlflow.log_text(section, f"{name}.md")
        for path in artifacts:
            mlflow.log_artifact(str(path))
        run_id = active.info.run_id
    print(f"logged to MLflow run {run_id} (experiment benchmarks in {uri})")
    return run_id


# --- the training side: config, sample, the timed step ---------------------------------------------------------------


@contextlib.contextmanager
def at_root() -> Iterator[None]:
    """Inside: the project root is the working directory (conf/ names data and vectors relative to it)."""
    before = Path.cwd()
    os.chdir(ROOT)
    try:
        yield
    finally:
        os.chdir(before)


def compose(overrides: Sequence[str] = (), config: str = "train"):
    """The composed Hydra config of conf/ with `overrides`, as `python -m ner.train` would compose it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name=config, overrides=list(overrides))


@dataclass
class Sample:
    """A model fresh from `ner.training.pipeline.build`, its initial weights, and a training sample encoded."""

    cfg: object  # the composed DictConfig
    trainer: object  # TrainerConfig, progress bar off
    model: torch.nn.Module  # ner.model.tagger.Tagger
    featurizer: object
    corpus: object  # the DatasetDict
    scheme: str  # the training tag scheme
    initial: dict
    enc: object = None  # ner.data.batching.Encoded of the sample
    warmup: object = None  # its first WARMUP_SENTENCES sentences

    def encode(self, sentences: list[list[str]], iob2: list[list[str]], documents: list[int] | None = None):
        """Tokens and IOB2 tags -> what `train_epoch` reads, as `ner.training.pipeline.train` encodes them."""
        from ner.data import schemes

        enc = self.featurizer.encode(sentences, [schemes.convert(t, self.scheme) for t in iob2], documents)
        context = self.model.cfg.context_tokens
        return enc.in_context(context)[0] if context and documents is not None else enc

    @property
    def lengths(self) -> list[int]:
        return [len(f) for f in self.enc.forms]

    @property
    def tokens(self) -> int:
        return sum(self.lengths)

    @property
    def batches(self) -> list[list[int]]:
        """The batches `time_epoch` trains the sample on: `train_epoch` makes exactly these with rng Random(0)."""
        from ner.data.batching import bucketed

        return bucketed(self.lengths, self.trainer.batch_size, rng=random.Random(0))


def training_sample(overrides: Sequence[str] = (), sentences: int | None = None, threads: int = 1) -> Sample:
    """The model of the composed config (with `overrides`) and its first `sentences` training sentences (all if
    None) encoded; `threads` torch threads; torch seeded with 0, so every benchmark starts from the same weights."""
    from ner.data.corpus import Sentences
    from ner.training.pipeline import build
    from ner.training.trainer import TrainerConfig

    cfg = compose([*overrides, f"trainer.threads={threads}"])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    with at_root():
        data_cfg, corpus, _, featurizer, model = build(cfg)
    trainer = TrainerConfig(**{**cfg.trainer, "progress": False})
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    sample = Sample(cfg, trainer, model, featurizer, corpus, data_cfg.train_scheme, initial)
    train = corpus["train"]
    if sentences is not None:
        train = train.select(range(min(sentences, len(train))))
    split = Sentences.of(train)
    sample.enc = sample.encode(split.tokens, split.gold, split.documents)
    n = WARMUP_SENTENCES
    sample.warmup = sample.encode(split.tokens[:n], split.gold[:n], split.documents[:n])
    return sample


@dataclass
class Timing:
    """One timed pass: tokens, wall seconds, CPU seconds of this process (all its threads)."""

    tokens: int
    seconds: float
    cpu_seconds: float

    @property
    def per_s(self) -> float:
        return self.tokens / self.seconds

    @property
    def per_cpu_s(self) -> float:
        return self.tokens / self.cpu_seconds


def _timed(run: Callable[[], object], tokens: int) -> Timing:
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return Timing(tokens, time.perf_counter() - wall, time.process_time() - cpu)


def time_epoch(sample: Sample, enc=None, warmup: bool = True) -> Timing:
    """One epoch of `ner.training.trainer.train_epoch` over `enc` (default: the sample) from the initial weights,
    with a fresh optimiser and rng Random(0) (so over `sample.batches`), after an untimed warm-up epoch over the
    sample's first sentences. CPU time moves far less than the wall clock when other jobs take the cores (with
    several threads it still includes OpenMP's spin-waiting)."""
    from ner.training.trainer import make_optimizer, train_epoch

    enc = sample.enc if enc is None else enc
    device = torch.device("cpu")

    def epoch(data) -> None:
        sample.model.load_state_dict(sample.initial)
        optimizer = make_optimizer(sample.model.parameters(), sample.trainer)
        train_epoch(sample.model, data, optimizer, sample.trainer, random.Random(0), device, 1)

    if warmup:
        epoch(sample.warmup)
    return _timed(lambda: epoch(enc), sum(len(f) for f in enc.forms))


def time_ceiling(
    input_size: int, hidden: int, lengths: list[int], batches: list[list[int]], bidirectional: bool = True
) -> Timing:
    """A bare (Bi)LSTM `input_size` -> `hidden` doing forward + backward + SGD step on random inputs padded as
    `batches` of sentences of `lengths`: no embeddings, no CRF, no packing. The first 20 batches warm up."""
    lstm = torch.nn.LSTM(input_size, hidden, batch_first=True, bidirectional=bidirectional)
    opt = torch.optim.SGD(lstm.parameters(), lr=0.01)

    def run(chosen: list[list[int]]) -> None:
        for index in chosen:
            x = torch.randn(len(index), max(lengths[i] for i in index), input_size)
            out, _ = lstm(x)
            loss = out.pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    run(batches[:20])
    return _timed(lambda: run(batches), sum(lengths[i] for b in batches for i in b))


# --- the tagging side: input, model, `ner.tag` in a child process ----------------------------------------------------


def parser(name: str, doc: str) -> argparse.ArgumentParser:
    """The command line of `python -m benchmarks.<name>`, described by the first line of its docstring."""
    return argparse.ArgumentParser(prog=f"python -m benchmarks.{name}", description=doc.splitlines()[0])


def add_stored_runs_args(parser: argparse.ArgumentParser, configs_help: str) -> None:
    """The options of the benchmarks that load the models of stored `benchmarks.accuracy` runs."""
    parser.add_argument("--configs", default="full-budget", help=configs_help)
    parser.add_argument("--experiment", default="accuracy", help="MLflow experiment of the training runs")
    parser.add_argument("--tracking-uri", help="MLflow store (default: the project store, mlruns/mlflow.db)")
    parser.add_argument("--data", default=str(CONLL), help="CoNLL-2003 folder")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")


def add_tag_args(parser: argparse.ArgumentParser, tokens: int = 2_000_000) -> None:
    """The model and input options of the tagging benchmarks."""
    parser.add_argument("--model", help="model URI or folder (default: best:ner, else the newest run with a model)")
    parser.add_argument("--tracking-uri", help="MLflow store (default: the project store, mlruns/mlflow.db)")
    parser.add_argument("--tokens", type=int, default=tokens, help=f"input size in tokens (default {tokens:,})")
    parser.add_argument("--mib", type=float, help="input size in MiB instead of tokens, e.g. 1024 for 1 GiB")
    parser.add_argument("--source", type=Path, default=CONLL_TRAIN, help="CoNLL file to detokenise")


def add_compare_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--compare",
        metavar="REV",
        help="tag the same input with the code of commit REV too (a git worktree), old and new in turn, and print"
        " both tokens/s and new/old",
    )
    parser.add_argument("--rounds", type=int, default=3, help="with --compare: rounds of each side, best kept")


def write_input(path: Path, tokens: int, source: Path = CONLL_TRAIN, size: float | None = None) -> int:
    """One detokenised CoNLL-2003 article per line, repeated to at least `tokens` tokens (or `size` characters, if
    given); returns the token count."""
    if not source.is_file():
        sys.exit(f"{source} not found: pass --source <CoNLL file> (the CoNLL-2003 train split is the default)")
    articles, sizes = conll_articles(source)
    total, written = 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while (written < size) if size else (total < tokens):
            for line, n in zip(articles, sizes, strict=True):
                written += f.write(line + "\n")  # characters: the text is ASCII but for a few names
                total += n
                if (written >= size) if size else (total >= tokens):
                    break
    return total


def conll_articles(source: Path = CONLL_TRAIN) -> tuple[list[str], list[int]]:
    """The articles (-DOCSTART- sections) of a CoNLL file as detokenised text, and their token counts."""
    articles, sizes, current, sentence = [], [], [], []
    for line in source.read_text(encoding="utf-8").splitlines() + ["-DOCSTART-"]:
        cols = line.split()
        if cols and cols[0] != "-DOCSTART-":
            sentence.append(cols[0])
            continue
        if sentence:
            current.append(sentence)
            sentence = []
        if cols and current:
            articles.append(" ".join(_detokenise(s) for s in current))
            sizes.append(sum(map(len, current)))
            current = []
    return articles, sizes


def _detokenise(tokens: list[str]) -> str:
    text = " ".join(tokens)
    text = re.sub(r" ([.,;:!?%)\]}])", r"\1", text)
    text = re.sub(r"([(\[{$]) ", r"\1", text)
    return re.sub(r" ('s|n't|'re|'ve|'ll|'d|'m)\b", r"\1", text)


def default_model(tracking_uri: str | None) -> str:
    """best:ner, else the newest finished run of any experiment that logged a model; else how to get one."""
    import mlflow

    from ner.tracking import model_uri

    uri = store_uri(tracking_uri)
    try:
        return model_uri.best_run_uri("ner", uri)
    except model_uri.ModelError:
        pass
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(
        search_all_experiments=True,
        filter_string="attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        output_format="list",
    )
    for run in runs:
        found = f"runs:/{run.info.run_id}/model"
        try:
            with model_uri.resolve(found, uri):
                return found
        except model_uri.ModelError:
            continue  # a run that logged no model
    sys.exit(HOW_TO_GET_A_MODEL)


def absolute_model(model: str) -> str:
    """A model folder as an absolute path (a child may run elsewhere); URIs unchanged."""
    return str(Path(model).resolve()) if Path(model).exists() else model


def setting(key: str, value) -> str:
    """One Hydra override `key=value` (strings quoted, so paths and URIs pass whole; None is null)."""
    if value is None:
        return f"{key}=null"
    if isinstance(value, bool):
        return f"{key}={str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"{key}={value}"
    return f"{key}='{str(value).replace(chr(92), chr(92) * 2).replace(chr(39), chr(92) + chr(39))}'"


def settings(values: dict) -> list[str]:
    return [setting(k, v) for k, v in values.items()]


def run_tag(overrides: Sequence[str], code: Path = ROOT, cpu_time: bool = False, capture: bool = True) -> dict:
    """`ner.tagging.pipeline.tag` on conf/tag composed with `overrides`, in a child process that runs the `ner` of
    `code` (PYTHONPATH and working directory; default: this checkout), so its peak memory is the tagger's alone.

    Returns the summary dict that tag() returned, plus what the child measured (peak RSS, CPU seconds, the config,
    `ner_file`: where its `ner` was imported from) and `process_seconds`, the child's whole wall time. With
    `cpu_time`, every stage timer of the child counts CPU time of its main thread instead of wall-clock time.
    `capture`: keep the child's output (shown only if it fails) rather than let it through (progress bars).
    """
    code = Path(code).resolve()
    with tempfile.TemporaryDirectory(prefix="bench-tag-summary-") as tmp:
        summary = Path(tmp) / "summary.json"
        cmd = [sys.executable, str(TAG_CHILD), "--summary", str(summary), *(["--cpu-time"] if cpu_time else [])]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(code), os.environ.get("PYTHONPATH")]))}
        pipe = subprocess.PIPE if capture else None
        start = time.perf_counter()
        proc = subprocess.run([*cmd, "--", *overrides], cwd=code, env=env, stdout=pipe, stderr=pipe, text=True)
        wall = time.perf_counter() - start
        if proc.returncode or not summary.is_file():
            tail = (proc.stderr or "")[-3000:] if capture else ""
            raise RuntimeError(f"the tagging child ({code}) exited {proc.returncode}:\n{tail}")
        result = json.loads(summary.read_text(encoding="utf-8"))
    if not Path(result["ner_file"]).resolve().is_relative_to(code):
        raise RuntimeError(f"the tagging child imported ner from {result['ner_file']}, not from {code}")
    result["process_seconds"] = wall
    return result


def one_core_tagging(folder: Path, args: argparse.Namespace, model: str) -> tuple[int, dict]:
    """The CPU-time benchmarks' input, written in `folder` (`args.tokens` of `args.source`), and the settings
    they tag it with: `model`, one article per line, one core (`threads=1 workers=0`). Returns (tokens, settings)."""
    source = folder / "news.txt"
    tokens = write_input(source, args.tokens, args.source)
    print(f"input: {source.stat().st_size / 2**20:.1f} MiB, {tokens:,} CoNLL tokens, model {model}", flush=True)
    base = {"model": model, "tracking_uri": store_uri(args.tracking_uri), "input": str(source)}
    base.update({"one_per_line": True, "threads": 1, "workers": 0, "output": str(folder / "out.jsonl")})
    return tokens, base


def run_of(model: str) -> str:
    """'run 2d1f818a' for runs:/2d1f818a.../model; anything else as given, without this machine's folders."""
    return f"run {model.split('/')[1][:8]}" if model.startswith("runs:/") else f"`{Path(model).name}`"


def machine_line() -> str:
    m = machine()
    return f"{m['cpu']} ({m['cores']} cores), torch {m['torch']}, {m['date']}"


def alternate(variants: dict[str, dict], rounds: int, tokens: int) -> dict[str, list[dict]]:
    """`run_tag` with each variant's settings in turn, `rounds` times, timed in CPU seconds of the child's main
    thread (model load left out): taking turns spreads whatever else the machine does over every variant alike.

    Per variant, one row a round: `cpu` (seconds in tag()), `scores` (of which entity scores), `per_s` (tokens
    per CPU-second)."""
    out: dict[str, list[dict]] = {name: [] for name in variants}
    for round_ in range(rounds):
        for name, values in variants.items():
            stages = run_tag(settings(values), cpu_time=True)["stage_seconds"]
            cpu = sum(v for k, v in stages.items() if k != "load")
            out[name].append({"cpu": cpu, "scores": stages.get("scores", 0.0), "per_s": tokens / cpu})
            print(f"round {round_ + 1} {name}: {tokens / cpu:,.0f} tokens per CPU-second", flush=True)
    return out


def median_row(rows: list[dict]) -> dict:
    """The median of each column of `alternate`'s rows."""
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def tag_defaults(code: Path = ROOT) -> dict:
    """The knobs of `python -m ner.tag` as conf/tag/tag.yaml of `code` sets them."""
    from omegaconf import OmegaConf

    values = OmegaConf.to_container(OmegaConf.load(Path(code) / "conf" / "tag" / "tag.yaml"))
    return {k: v for k, v in values.items() if k not in ("hydra", "defaults")}


def rate(result: dict, without_load: bool = False) -> float:
    """Tokens per second inside tag() (model load included, or left out)."""
    seconds = result["seconds"] - (result["stage_seconds"].get("load", 0.0) if without_load else 0.0)
    return result["tokens"] / max(seconds, 1e-9)


# --- before/after: the same child against another commit -------------------------------------------------------------


@contextlib.contextmanager
def worktree(rev: str) -> Iterator[Path]:
    """A detached checkout of `rev` in a temporary folder (`git worktree add --detach`), removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="bench-worktree-"))
    git = ["git", "-C", str(ROOT), "worktree"]
    subprocess.run([*git, "add", "--detach", "--quiet", str(folder), rev], check=True)
    try:
        yield folder
    finally:
        subprocess.run([*git, "remove", "--force", str(folder)], check=False)
        subprocess.run([*git, "prune"], check=False)


def compare(rev: str, runs: dict[str, dict], output: Path, rounds: int = 3) -> list[dict]:
    """Each of `runs` (name -> `ner.tag` settings: model, input and knobs, every path absolute) with the code of
    `rev` and with this checkout, `rounds` times each, old and new in turn (the first side alternating), so that
    load from other jobs hits both alike. Prints every round and then the table (`comparison_table`: the best round
    of each side); returns its rows, every round's summary under "old" and "new". Outputs go below `output`; each
    row says whether every round of both sides wrote the same records."""
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", rev], capture_output=True, text=True, check=True
    ).stdout.strip()
    rows = []
    with worktree(rev) as old:
        print(f"old: {rev} ({commit}) checked out in {old}; new: {ROOT}", flush=True)
        for n, (name, values) in enumerate(runs.items()):
            results: dict[str, list[dict]] = {"old": [], "new": []}
            outputs = set()
            for number in range(rounds):
                sides = [("old", old), ("new", ROOT)]
                for side, code in sides if number % 2 == 0 else sides[::-1]:
                    out = output / f"{n}-{side}"
                    result = run_tag(settings({**values, "output": str(out), "progress": False}), code)
                    outputs.add(hash(tuple(_lines(out))))
                    results[side].append(result)
                    print(
                        f"  {name}, round {number + 1}, {side}: {rate(result):,.0f} tokens/s"
                        f" ({rate(result, True):,.0f} without the model load; ner from {result['ner_file']})",
                        flush=True,
                    )
            rows.append({"name": name, **results, "same": len(outputs) == 1})
    print("\n" + comparison_table(rows, rev, commit, rounds))
    return rows


def _lines(path: Path) -> list[str]:
    """The output's lines, sorted: one file, or a folder's part files (Spark writes them in any order)."""
    if not path.is_dir():
        return sorted(path.read_text(encoding="utf-8").splitlines())
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith((".", "_")))
    return sorted(line for f in files for line in f.read_text(encoding="utf-8").splitlines())


def comparison_table(rows: list[dict], rev: str, commit: str, rounds: int) -> str:
    """Markdown: per run, the best old and new tokens/s (inside tag(), with and without the model load), new/old,
    and whether every round of both sides wrote the same records."""
    lines = [
        f"old = {rev} ({commit}), new = this checkout; best of {rounds} rounds each, taken in turn; tokens/s inside"
        " tag(), model load included, and without the model load",
        "",
        "| run | tokens | old tokens/s | new tokens/s | new/old | old, no load | new, no load | new/old | same out |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        a, b = (max(rate(x) for x in r[side]) for side in ("old", "new"))
        c, d = (max(rate(x, True) for x in r[side]) for side in ("old", "new"))
        lines.append(
            f"| {r['name']} | {r['new'][0]['tokens']:,} | {a:,.0f} | {b:,.0f} | {b / a:.2f}x | {c:,.0f} | {d:,.0f} |"
            f" {d / c:.2f}x | {'yes' if r['same'] else 'NO'} |"
        )
    return "\n".join(lines)
