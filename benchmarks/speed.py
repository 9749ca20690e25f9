"""Training and tagging speed: our tagger vs Flair's SequenceTagger of the same size, and vs a bare nn.LSTM.

    bash benchmarks/flair_env.sh                                   # once: Flair in .venv-flair/
    .venv/bin/python -m benchmarks.speed [--sentences 2000] [--threads 2] [--rounds 2] [--tag-tokens 50000]
    .venv/bin/python -m benchmarks.speed --threads 1     # while other jobs share the cores (see below)

Everything is measured in one run, in rounds: every round measures every row once, back to back (ours, the
bare-LSTM ceilings, Flair in a child process of .venv-flair, then tagging), so that load from other jobs on the
shared cores hits all rows alike; each row keeps its best round (the least disturbed) and the 1-minute load average
at that moment. Training rows also give tokens per CPU-second of the process, which other jobs change far less
than the wall clock. With 2 threads, torch's OpenMP threads wait on each other whenever another process holds a
core (several times slower, at random): on a shared machine use --threads 1.

Training: tokens/s of one epoch of the real training step (`ner.training.trainer.train_epoch`) over the first
`--sentences` CoNLL-2003 training sentences in batches of `trainer.batch_size`, on the default model (char CNN) and
with `model.char_encoder=lstm` (Flair's character encoder is a BiLSTM, so that row is the like-for-like one); Flair
gets the very same batches (and, in a second row, the shuffled fixed-size batches its own ModelTrainer makes). The
ceiling is a bare `nn.LSTM` of the same input and hidden sizes doing forward + backward + step on the same batches
(`harness.time_ceiling`, as `python -m benchmarks.train` uses it).

Tagging: file -> JSONL end to end on one text (CoNLL-2003 train articles, one per line, `harness.write_input`):
ours through `ner.tag`'s work in a child process (`harness.run_tag`, its summary read back as JSON), Flair through
`predict` after splitting with its segtok splitter. Both models are the ones the training rows just trained (an
epoch or two on the sample: the speed is that of a fully trained model of the same size, the tags are not). Each
system counts its own tokens; "vs Flair" for tagging is the ratio of wall times on the same text.

The table is printed, logged to MLflow (experiment `benchmarks`) and written between the `speed` markers of
docs/benchmarks.md. Not a test: it takes several minutes and its numbers depend on what else runs.

Past 400 lines: one comparison with two peers (Flair and the bare LSTM) in training and in tagging, and its report
tables; the shared timing and tagging code is in harness.py.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmarks import harness
from ner.data.batching import bucketed

FLAIR_PYTHON = harness.ROOT / ".venv-flair" / "bin" / "python"
FLAIR_PEER = Path(__file__).resolve().parent / "flair_peer.py"
TARGETS = {"train_vs_flair": 2.0, "train_vs_ceiling": 0.5, "tag_vs_flair": 5.0, "tag_tokens_per_s": 100_000}
CEILING_OF = {  # training row -> the bare nn.LSTM row of its sizes
    "train_ours_cnn": "ceiling_cnn",
    "train_ours_lstm": "ceiling_lstm",
    "train_flair": "ceiling_flair",
    "train_flair_shuffled": "ceiling_flair",
}


@dataclass
class Ours:
    """One configuration of our tagger, ready to be timed: the model and its encoded sample (`harness.Sample`)."""

    name: str
    overrides: list[str]
    sample: harness.Sample
    packed: tuple[float, float] = (0.0, 0.0)  # share of tokens in batches that need packing: sample, full epoch
    folder: Path | None = None  # where the trained model is saved for tagging

    @property
    def model(self) -> torch.nn.Module:
        return self.sample.model


@dataclass
class Row:
    """One measured line of a table: the best value over the rounds and the load when it was taken."""

    key: str
    what: str
    values: list[tuple[float, float]] = field(default_factory=list)  # (tokens/s, 1-minute load average)
    info: dict = field(default_factory=dict)
    cpu: list[float] = field(default_factory=list)  # tokens per CPU-second of each round, where measured

    @property
    def best_cpu(self) -> float:
        return max(self.cpu, default=float("nan"))

    def add(self, value: float, cpu: float | None = None, **info) -> None:
        """Record one round's tokens/s and tokens per CPU-second (`info`: details, kept for the best round)."""
        self.values.append((value, os.getloadavg()[0]))
        if cpu is not None:
            self.cpu.append(cpu)
        if value >= self.best:
            self.info = info
        per_cpu = f", {cpu:,.0f} per CPU-s" if cpu else ""
        print(f"  {self.what}: {value:,.0f} tokens/s{per_cpu} (load {os.getloadavg()[0]:.2f})", flush=True)

    @property
    def best(self) -> float:
        return max((v for v, _ in self.values), default=0.0)

    @property
    def rounds(self) -> str:
        """Every round's tokens/s, in order: how much the shared machine moved them."""
        return " / ".join(f"{v:,.0f}" for v, _ in self.values)

    @property
    def load(self) -> float:
        return max(self.values)[1] if self.values else float("nan")


def parse() -> argparse.Namespace:
    ap = harness.parser("speed", __doc__)
    ap.add_argument("--sentences", type=int, default=2000, help="first N CoNLL-2003 training sentences")
    ap.add_argument("--threads", type=int, default=2, help="torch threads, ours and Flair's")
    ap.add_argument("--rounds", type=int, default=2, help="every row is measured this many times; best kept")
    ap.add_argument("--tag-tokens", type=int, default=50_000, help="size of the text both taggers tag")
    ap.add_argument(
        "--throughput-tokens",
        type=int,
        default=1_000_000,
        help="ours alone on a text this large: steady-state tokens/s for the 100,000 target (0 = skip)",
    )
    ap.add_argument(
        "--flair-batch-size", type=int, default=32, help="Flair predict(mini_batch_size=...): its default, fastest here"
    )
    ap.add_argument("--tracking-uri", help="MLflow store (default: the project store, ./mlruns/mlflow.db)")
    ap.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    ap.add_argument("--no-flair", action="store_true", help="skip Flair (e.g. .venv-flair missing): no ratios")
    return ap.parse_args()


def prepare(name: str, overrides: list[str], sentences: int, threads: int) -> Ours:
    """Our model from the real composed config and its sample (`harness.training_sample`), with packing shares."""
    sample = harness.training_sample(overrides, sentences, threads)
    full = [len(t) for t in sample.corpus["train"]["tokens"]]
    full_batches = bucketed(full, sample.trainer.batch_size, rng=random.Random(0))
    packed = (packed_share(sample.batches, sample.lengths), packed_share(full_batches, full))
    return Ours(name, overrides, sample, packed)


def packed_share(batches: list[list[int]], lengths: list[int]) -> float:
    """Share of tokens in batches whose sentences differ in length: those that run padded, not packed."""
    packed = sum(lengths[i] for b in batches if len({lengths[i] for i in b}) > 1 for i in b)
    return packed / max(sum(lengths[i] for b in batches for i in b), 1)


def time_ours(setup: Ours) -> tuple[float, float]:
    """(tokens/s, tokens per CPU-second) of one `train_epoch` from the initial weights, after a short warm-up."""
    timing = harness.time_epoch(setup.sample)
    return timing.per_s, timing.per_cpu_s


def time_ceiling(input_size: int, hidden: int, sample: harness.Sample) -> tuple[float, float]:
    """(tokens/s, tokens per CPU-second) of the bare BiLSTM `input_size` -> 2 x `hidden` on the sample's batches."""
    timing = harness.time_ceiling(input_size, hidden, sample.lengths, sample.batches)
    return timing.per_s, timing.per_cpu_s


def run_flair(args: argparse.Namespace, plan: Path, text: Path, out: Path) -> dict:
    """Flair's results (see flair_peer.py) from a child process in .venv-flair; raises with its stderr tail."""
    cmd = [str(FLAIR_PYTHON), str(FLAIR_PEER), "--batches", str(plan), "--threads", str(args.threads)]
    cmd += ["--tag-input", str(text), "--tag-output", str(out), "--tag-batch-size", str(args.flair_batch_size)]
    env = {**os.environ, "FLAIR_CACHE_ROOT": str(out.parent / "flair-cache"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=harness.ROOT)
    if proc.returncode:
        raise RuntimeError(f"flair_peer.py exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def same_work_knobs(threads: int) -> dict:
    """`ner.tag` settings for the rows beside Flair: in this process with `threads` torch threads, as Flair runs,
    and in float32, as Flair runs (the default precision=auto may pick bf16)."""
    defaults = harness.tag_defaults()
    return {
        "threads": threads,
        **({"workers": 0} if "workers" in defaults else {}),
        **({"precision": "fp32"} if "precision" in defaults else {}),
    }


def run_ours_tag(folder: Path, text: Path, out: Path, knobs: dict) -> dict:
    """`ner.tag`'s work on `text` -> JSONL in a child process: tag()'s summary (tokens, entities, seconds inside
    tag(), precision, ...) plus the child's whole wall time, `process_seconds`."""
    values = {"model": str(folder), "input": str(text), "output": str(out), "one_per_line": True, "progress": False}
    return harness.run_tag(harness.settings({**values, **knobs}))


def trainable_size(model: torch.nn.Module, skip: Callable[[str], bool]) -> int:
    """Trainable parameters, leaving out the word-vector tables (ours trains its rows, Flair freezes GloVe)."""
    return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and not skip(n))


class Bench:
    """Holds the setups and rows; `round()` measures every row once."""

    def __init__(self, args: argparse.Namespace, tmp: Path):
        self.args, self.tmp = args, tmp
        print("preparing our models and the sample ...", flush=True)
        self.cnn = prepare("default (char CNN)", [], args.sentences, args.threads)
        self.lstm = prepare("char LSTM", ["model.char_encoder=lstm"], args.sentences, args.threads)
        self.plan = tmp / "batches.json"  # Flair trains on the batches train_epoch trains ours on
        self.plan.write_text(json.dumps({"lengths": self.cnn.sample.lengths, "batches": self.cnn.sample.batches}))
        self.text = tmp / "news.txt"
        self.text_tokens = harness.write_input(self.text, args.tag_tokens)
        self.big_text = tmp / "news-big.txt"
        self.big_tokens = 0
        if args.throughput_tokens:
            self.big_tokens = harness.write_input(self.big_text, args.throughput_tokens)
        hidden = self.cnn.model.rnn.hidden_size
        defaults = harness.tag_defaults()
        knobs = ("workers", "threads", "batch_size", "precision")
        big_knobs = ", ".join(f"{k}={defaults[k]}" for k in knobs if k in defaults)
        self.flair_info: dict = {}
        self.rows = {
            key: Row(key, what)
            for key, what in [
                ("train_ours_cnn", f"ours, default: char CNN (LSTM input {self.cnn.model.rnn.input_size})"),
                ("train_ours_lstm", f"ours, model.char_encoder=lstm (LSTM input {self.lstm.model.rnn.input_size})"),
                ("train_flair", "Flair SequenceTagger, same batches as ours"),
                ("train_flair_shuffled", "Flair SequenceTagger, ModelTrainer-style shuffled batches"),
                ("ceiling_cnn", f"bare nn.LSTM {self.cnn.model.rnn.input_size} -> 2x{hidden}, fwd+bwd+step"),
                ("ceiling_lstm", f"bare nn.LSTM {self.lstm.model.rnn.input_size} -> 2x{hidden}, fwd+bwd+step"),
                ("ceiling_flair", "bare nn.LSTM at Flair's input size"),
                ("tag_ours_cnn", "ours, default (char CNN): ner.tag"),
                ("tag_ours_lstm", "ours, char LSTM: ner.tag"),
                ("tag_ours_big", f"ours, default, {self.big_tokens:,}-token text, `ner.tag` defaults ({big_knobs})"),
                ("tag_ours_big_fp32", f"ours, default, {self.big_tokens:,}-token text, defaults but precision=fp32"),
                ("tag_flair", f"Flair: segtok split + predict(mini_batch_size={args.flair_batch_size}) + JSONL"),
            ]
        }

    def round(self, number: int) -> None:
        print(f"round {number} (load average {harness.load_average()})", flush=True)
        hidden = self.cnn.model.rnn.hidden_size
        for setup, key in ((self.cnn, "cnn"), (self.lstm, "lstm")):
            self.rows[f"train_ours_{key}"].add(*time_ours(setup))
            size = setup.model.rnn.input_size
            self.rows[f"ceiling_{key}"].add(*time_ceiling(size, hidden, setup.sample))
            if setup.folder is None:
                setup.folder = self.tmp / f"tagger-{key}"
                setup.model.save(setup.folder)
        if not self.args.no_flair:
            self._flair(hidden)
        for setup, key in ((self.cnn, "cnn"), (self.lstm, "lstm")):
            knobs = same_work_knobs(self.args.threads)
            result = run_ours_tag(setup.folder, self.text, self.tmp / f"ours-{key}.jsonl", knobs)
            self.rows[f"tag_ours_{key}"].add(harness.rate(result), **result)
        if self.big_tokens:
            for key, knobs in (("tag_ours_big", {}), ("tag_ours_big_fp32", {"precision": "fp32"})):
                result = run_ours_tag(self.cnn.folder, self.big_text, self.tmp / "ours-big.jsonl", knobs)
                self.rows[key].add(harness.rate(result), **result)

    def _flair(self, hidden: int) -> None:
        result = run_flair(self.args, self.plan, self.text, self.tmp / "flair.jsonl")
        self.flair_info = {k: result[k] for k in ("flair", "torch", "threads", "params", "rnn_input_size")}
        for key, part in (("train_flair", "train_same_batches"), ("train_flair_shuffled", "train_shuffled")):
            self.rows[key].add(result[part]["tokens_per_s"], result[part]["tokens_per_cpu_s"], **result[part])
        size = result["rnn_input_size"]
        self.rows["ceiling_flair"].what = f"bare nn.LSTM {size} -> 2x{hidden}, fwd+bwd+step (Flair's sizes)"
        self.rows["ceiling_flair"].add(*time_ceiling(size, hidden, self.cnn.sample))
        self.rows["tag_flair"].add(result["tag"]["tokens_per_s"], **result["tag"])


def ratio(a: float, b: float) -> float:
    """a / b, NaN when b is missing (Flair skipped)."""
    return a / b if b else float("nan")


def metrics(bench: Bench) -> dict[str, float]:
    """Every number of the tables, for MLflow: best tokens/s per row, its load, and the ratios."""
    rows = bench.rows
    out = {f"{k}_tokens_per_s": r.best for k, r in rows.items() if r.values}
    out.update({f"{k}_load1": r.load for k, r in rows.items() if r.values})
    out.update({f"{k}_tokens_per_cpu_s": r.best_cpu for k, r in rows.items() if r.cpu})
    for key, ceiling in CEILING_OF.items():
        out[f"{key}_vs_flair"] = ratio(rows[key].best, rows["train_flair"].best)
        out[f"{key}_vs_ceiling"] = ratio(rows[key].best, rows[ceiling].best)
        out[f"{key}_vs_flair_cpu"] = ratio(rows[key].best_cpu, rows["train_flair"].best_cpu)
        out[f"{key}_vs_ceiling_cpu"] = ratio(rows[key].best_cpu, rows[ceiling].best_cpu)
    flair_seconds = rows["tag_flair"].info.get("seconds", 0.0)
    for key in ("tag_ours_cnn", "tag_ours_lstm"):
        if flair_seconds:
            out[f"{key}_vs_flair"] = ratio(flair_seconds, rows[key].info.get("seconds", 0.0))
    return {k: v for k, v in out.items() if v == v}  # drop NaN (Flair skipped)


def train_table(bench: Bench, m: dict[str, float]) -> str:
    """Training rows: tokens/s (best round), ratios to Flair (same batches) and to the row's own ceiling."""
    flair_params = bench.flair_info.get("params", 0)
    params_of = {
        "train_ours_cnn": trainable_size(bench.cnn.model, lambda n: n.startswith("word_embed")),
        "train_ours_lstm": trainable_size(bench.lstm.model, lambda n: n.startswith("word_embed")),
        "train_flair": flair_params,
        "train_flair_shuffled": flair_params,
    }
    lines = [
        "| training | params* | tokens/s | vs Flair | vs ceiling | every round | load "
        "| tokens/CPU-s | vs Flair | vs ceiling |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key in (*CEILING_OF, "ceiling_cnn", "ceiling_lstm", "ceiling_flair"):
        row = bench.rows[key]
        if not row.values:
            continue
        params = params_of.get(key, 0)
        vs_ceiling = m.get(f"{key}_vs_ceiling", 1.0 if key.startswith("ceiling") else float("nan"))
        vs_flair = ratio(row.best, bench.rows["train_flair"].best)
        cpu = row.best_cpu
        cpu_vs_flair = ratio(cpu, bench.rows["train_flair"].best_cpu)
        cpu_vs_ceiling = ratio(cpu, bench.rows[CEILING_OF.get(key, key)].best_cpu)
        lines.append(
            f"| {row.what} | {f'{params:,}' if params else ''} | {row.best:,.0f} | {_x(vs_flair)} | "
            f"{vs_ceiling:.2f} | {row.rounds} | {row.load:.2f} | {cpu:,.0f} | {_x(cpu_vs_flair)} | "
            f"{cpu_vs_ceiling:.2f} |"
        )
    return "\n".join(lines)


def tag_table(bench: Bench, m: dict[str, float]) -> str:
    """Tagging rows: tokens/s, and Flair's wall time over ours on the same text."""
    rows = bench.rows
    lines = [
        "| tagging, file -> JSONL | tokens | entities | seconds | tokens/s | vs Flair (time) | every round | load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    flair_seconds = rows["tag_flair"].info.get("seconds", 0.0)
    for key in ("tag_ours_cnn", "tag_ours_lstm", "tag_flair", "tag_ours_big", "tag_ours_big_fp32"):
        row, info = rows[key], rows[key].info
        if not row.values:
            continue
        vs = _x(ratio(flair_seconds, info["seconds"]) if flair_seconds else float("nan"))
        vs = "n/a" if key.startswith("tag_ours_big") else vs
        what = f"{row.what} (ran {info['precision']})" if key == "tag_ours_big" else row.what
        lines.append(
            f"| {what} | {info['tokens']:,} | {info['entities']:,} | {info['seconds']:.2f} | {row.best:,.0f} |"
            f" {vs} | {row.rounds} | {row.load:.2f} |"
        )
    wall = rows["tag_ours_cnn"].info.get("process_seconds")
    if wall:
        tokens = rows["tag_ours_cnn"].info["tokens"]
        lines.append(
            f"| ours, default, the whole tagging process (interpreter, imports, config, model load) | {tokens:,} |"
            f" | {wall:.2f} | {tokens / wall:,.0f} | | | |"
        )
    return "\n".join(lines)


def _x(value: float) -> str:
    return f"{value:.2f}x" if value == value else "n/a"


def verdicts(m: dict[str, float]) -> str:
    """The issue's targets, met or not, for the default model."""
    big = m.get("tag_ours_big_tokens_per_s", m.get("tag_ours_cnn_tokens_per_s"))
    train_flair, train_ceiling = TARGETS["train_vs_flair"], TARGETS["train_vs_ceiling"]
    checks = [
        ("training >= 2x Flair", m.get("train_ours_cnn_vs_flair"), train_flair, "{:.2f}x"),
        ("  the same per CPU-second", m.get("train_ours_cnn_vs_flair_cpu"), train_flair, "{:.2f}x"),
        ("training >= 50% of the bare nn.LSTM", m.get("train_ours_cnn_vs_ceiling"), train_ceiling, "{:.0%}"),
        ("  the same per CPU-second", m.get("train_ours_cnn_vs_ceiling_cpu"), train_ceiling, "{:.0%}"),
        ("tagging >= 5x Flair", m.get("tag_ours_cnn_vs_flair"), TARGETS["tag_vs_flair"], "{:.2f}x"),
        ("tagging >= 100,000 tokens/s (largest text)", big, TARGETS["tag_tokens_per_s"], "{:,.0f} tokens/s"),
    ]
    out = []
    for what, value, target, shape in checks:
        bullet = "  - " if what.startswith(" ") else "- "
        state = "n/a" if value is None else f"{'met' if value >= target else 'NOT met'} ({shape.format(value)})"
        out.append(f"{bullet}{what.strip()}: {state}")
    return "\n".join(out)


def report(bench: Bench, info: dict, m: dict[str, float], command: str, load: tuple) -> str:
    """The whole Markdown section: machine, command, tables, targets, and what was compared how."""
    args, fi = bench.args, bench.flair_info
    cnn, trainer = bench.cnn, bench.cnn.sample.trainer
    flair = f"Flair {fi['flair']} (same torch: {fi['torch']})" if fi else "Flair not run"
    sample_packed, epoch_packed = cnn.packed
    knobs = " ".join(f"{k}={v}" for k, v in same_work_knobs(args.threads).items())
    return f"""## Training and tagging speed vs Flair

- date: {info["date"]}
- machine: {info["cpu"]}, {info["cores"]} cores (shared), torch {info["torch"]}, Python {info["python"]}; {flair}
- command: `{command}`
- load average (1, 5, 15 min): {harness.load_average(load[0])} at the start, {harness.load_average(load[1])} at \
the end; the "load" column is the
  1-minute load when that row's best round ran ({args.rounds} rounds, each row measured once per round, best kept)
- torch threads: {args.threads} for every system
- training sample: the first {len(cnn.sample.enc):,} CoNLL-2003 training sentences ({cnn.sample.tokens:,} tokens)
- training step: `ner.training.trainer.train_epoch`, batch {trainer.batch_size}, SGD (lr {trainer.lr}, momentum \
{trainer.momentum}), gradient clip {trainer.clip}
- every system: BiLSTM {cnn.model.rnn.hidden_size} per direction, CRF, GloVe 6B 50d

{train_table(bench, m)}

\\* trainable parameters without the word-vector table (ours fine-tunes the rows of training words, Flair keeps
GloVe frozen, its default). "vs ceiling" divides by the bare `nn.LSTM` of the row's own input size
(`python -m benchmarks.train`); Flair's char encoder is a BiLSTM (30 + 30) while ours defaults to a CNN (30
filters), so the `char_encoder=lstm` row is the like-for-like one; ours also has a 10-d casing feature. Batches
whose sentences differ in length ({sample_packed:.0%} of the sample's tokens; {epoch_packed:.0%} in a full
CoNLL-2003 epoch) run padded, one direction at a time (`ner/model/recurrent.py`), never packed. "tokens/CPU-s":
tokens per CPU-second of the measuring process (all its threads), which other jobs on the cores move far less than
the wall clock; its ratios are the steadier ones on a shared machine.

{tag_table(bench, m)}

Tagging input: {bench.text_tokens:,} CoNLL tokens of CoNLL-2003 training articles, detokenised, one per line
(`harness.write_input`). Each system tokenises the raw text itself (ours: `ner.data.tokenize`; Flair: segtok), so
token counts differ slightly; "vs Flair" is Flair's wall time over ours on the same file. Ours is timed inside
`ner.tagging.pipeline.tag()` (reading, model load, tokenising, tagging, writing JSONL), in a child process, Flair
from reading the file to the closed JSONL (model in memory, loading not counted). Beside Flair, ours runs in one
process with the same torch threads:
`{knobs}`; the larger text runs with `ner.tag`'s own defaults, as a user would run it (its worker processes may
use every core). Both models are the ones just trained on the sample (the
speed is that of any model of this size; their tags are not meaningful).

Targets (default model):
{verdicts(m)}
{contention(bench)}"""


def contention(bench: Bench) -> str:
    """A warning when other jobs competed for the cores during the run (then absolute numbers are low)."""
    peak = max((load for row in bench.rows.values() for _, load in row.values), default=0.0)
    cores = os.cpu_count() or 1
    if peak <= cores + 0.5:
        return ""
    text = (
        f"\nWarning: the 1-minute load reached {peak:.2f} on {cores} cores: other jobs shared the cores, so every"
        " absolute number above is lower than on an idle machine (the ratios, measured back to back, hold better)."
    )
    if bench.args.threads > 1:
        text += (
            f" With {bench.args.threads} threads torch's OpenMP threads also wait on each other while another"
            " process holds a core (up to ~10x slower); compare with --threads 1."
        )
    return "\n" + textwrap.fill(text.strip(), width=115) + "\n"


def main() -> None:
    args = parse()
    if not args.no_flair and not FLAIR_PYTHON.is_file():
        sys.exit(f"{FLAIR_PYTHON} not found: run `bash benchmarks/flair_env.sh` first (or pass --no-flair)")
    info = harness.machine()
    start_load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-speed-") as tmp:
        bench = Bench(args, Path(tmp))
        for number in range(1, args.rounds + 1):
            bench.round(number)
    m = metrics(bench)
    section = report(bench, info, m, harness.command("speed"), (start_load, os.getloadavg()))
    print("\n" + section)
    params = {**info, **{f"flair_{k}": v for k, v in bench.flair_info.items()}}
    params.update({k: v for k, v in vars(args).items() if k != "tracking_uri"})
    harness.log_run("speed", args.tracking_uri, params, m, section)
    if not args.no_docs:
        harness.write_section("speed", section)


if __name__ == "__main__":
    main()
