"""Pretrained vectors as users bring them: first load, cached load, peak memory, model size, tagging speed.

    python -m benchmarks.vectors                       # 400,000 x 300 GloVe text (+ .gz and word2vec binary)
    python -m benchmarks.vectors --big                 # also 2,200,000 x 300 (GloVe 840B's size: 6 GB of text)
    python -m benchmarks.vectors --words 100000 --dim 50 --no-formats --no-docs   # a quick look

Generates the files (GloVe 6B's text layout: the shipped 50-d file's words in frequency order first, then made-up
ones, 300 values of 5 significant digits a line), then, each in a fresh child process (`--child`, so a peak resident
set is one step's alone, read with getrusage in the child):

- `read_vectors` with an empty cache (parse + write the cache), then again (the cache, memory-mapped);
- `ner.training.pipeline.build` of `experiment=smoke` without vectors, and with the file at keep=all (cold cache and
  warm), keep=200000 (the default) and keep=train: seconds and peak RSS over the run without vectors, as a multiple
  of the matrix; the model saved (weights.pt on disk, its tensors in memory) and its tagging speed (the Engine over
  the CoNLL-2003 dev sentences, one thread, best of 3) — the table's size must not change that speed;
- the share of CoNLL-2003 and WNUT-17 dev/test tokens the vocabulary knows with keep=train, 10k ... all, read off the
  shipped 50-d file (its first 100,000 lines are GloVe 6B's, its other lines the corpora's words GloVe 6B has, so
  "all" is what the full 400,000-word file covers): the measurement behind keep's default.

The cache of the build children goes to a folder of the benchmark (their HOME, and `model.embeddings.cache_dir`),
never to the user's. Not a test: minutes, gigabytes of disk, and timings that move with the machine's load.

Past 300 lines on purpose: making the files, the child steps, the coverage study and the report are one measurement,
each a few short functions, and none is wanted by another benchmark (harness.py holds what is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import harness

GLOVE50 = harness.DATA / "vectors" / "glove.6B.50d.txt"
KEEPS = {
    "keep=all, cold cache": "all",
    "keep=all, cached": "all",
    "keep=200000 (default)": 200000,
    "keep=train": "train",
}
COVERAGE_KS = (0, 10_000, 20_000, 50_000, 100_000, None)
SPEED_ROUNDS = 10


def main() -> None:
    ap = harness.parser("vectors", __doc__)
    ap.add_argument("--words", type=int, default=400_000)
    ap.add_argument("--dim", type=int, default=300)
    ap.add_argument("--big", action="store_true", help="also 2,200,000 words (needs ~9 GB of disk, ~6 GB of memory)")
    ap.add_argument("--no-formats", action="store_true", help="skip the .gz and word2vec binary loads")
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "ner-vectors-bench")
    ap.add_argument("--keep-files", action="store_true", help="leave the generated files in --dir")
    ap.add_argument("--tracking-uri", help="MLflow store (default: the project store, mlruns/mlflow.db)")
    ap.add_argument("--no-docs", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)  # one step, run by this benchmark in a fresh process
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    args.dir.mkdir(parents=True, exist_ok=True)
    print(f"load average {harness.load_average()} at the start", flush=True)
    sizes = [args.words] + ([2_200_000] if args.big else [])
    results = {n: measure(args.dir, n, args.dim, formats=not args.no_formats and n == sizes[0]) for n in sizes}
    cover = coverage_table()
    section = report(results, cover, args.dim, harness.command("vectors"))
    print(section)
    metrics = {}
    for n, r in results.items():
        metrics[f"first_load_s_{n}"], metrics[f"cached_load_s_{n}"] = (
            r["loads"]["text"]["seconds"],
            r["cached"]["seconds"],
        )
        for name, b in r["builds"].items():
            metrics[f"build_peak_gb_{n}_{re.sub(r'[^a-z0-9]+', '_', name)}"] = b["peak_gb"]
    harness.log_run("vectors", args.tracking_uri, {k: str(v) for k, v in vars(args).items()}, metrics, section)
    if not args.no_docs:
        harness.write_section("vectors", section)
    if not args.keep_files:
        shutil.rmtree(args.dir, ignore_errors=True)


# --- the files -------------------------------------------------------------------------------------------------------


def generate(path: Path, words: int, dim: int) -> None:
    """A GloVe text file of `words` lines: real words first, then w<N>; rows drawn from a pool of random ones."""
    if path.is_file():
        return
    rng = np.random.default_rng(0)
    pool = [" ".join(f"{x:.5g}" for x in row).encode() for row in rng.normal(0, 0.4, size=(4096, dim))]
    real = [line.split(" ", 1)[0] for line in GLOVE50.read_text(encoding="utf-8").splitlines()][:words]
    picks = rng.integers(0, len(pool), size=words)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb", buffering=1 << 24) as f:
        for i in range(words):
            word = real[i] if i < len(real) else f"w{i}"
            f.write(word.encode() + b" " + pool[picks[i]] + b"\n")
    tmp.rename(path)


def other_formats(text: Path, folder: Path) -> dict[str, Path]:
    """The same vectors as .gz (level 1) and as word2vec binary (written from the parsed matrix)."""
    import gzip

    from ner.data.vectors import read_vectors

    gz, binary = folder / (text.name + ".gz"), folder / (text.stem + ".bin")
    if not gz.is_file():
        with open(text, "rb") as src, gzip.open(gz.with_name(gz.name + ".part"), "wb", compresslevel=1) as dst:
            shutil.copyfileobj(src, dst, 1 << 24)
        gz.with_name(gz.name + ".part").rename(gz)  # whole, or not there: --keep-files reuses it
    if not binary.is_file():
        vectors = read_vectors(text, cache_dir=folder / "convert-cache", note=lambda _: None)
        with open(binary.with_name(binary.name + ".part"), "wb") as f:
            f.write(f"{len(vectors.words)} {vectors.dim}\n".encode())
            for lo in range(0, len(vectors.words), 10_000):
                rows = np.asarray(vectors.matrix[lo : lo + 10_000], dtype="<f4")
                for word, row in zip(vectors.words[lo : lo + 10_000], rows, strict=True):
                    f.write(word.encode() + b" " + row.tobytes() + b"\n")
        binary.with_name(binary.name + ".part").rename(binary)
        shutil.rmtree(folder / "convert-cache", ignore_errors=True)
    return {".gz (level 1)": gz, "word2vec binary": binary}


# --- one size: every measurement -------------------------------------------------------------------------------------


def measure(folder: Path, words: int, dim: int, formats: bool) -> dict:
    text = folder / f"vectors-{words}x{dim}.txt"
    start = time.perf_counter()
    generate(text, words, dim)
    print(f"{text}: {text.stat().st_size / 1e9:.2f} GB ({time.perf_counter() - start:.0f} s to make)", flush=True)
    files = {"text": text, **(other_formats(text, folder) if formats else {})}
    cache = folder / f"cache-{words}"
    loads = {}
    shutil.rmtree(cache, ignore_errors=True)
    for name, path in files.items():  # each file its own cache entry
        loads[name] = run_child({"mode": "load", "path": str(path), "cache": str(cache)})
        print(f"  first load, {name}: {loads[name]['seconds']:.1f} s, +{loads[name]['rss_gb']:.2f} GB", flush=True)
        if loads[name]["words"] != loads["text"]["words"]:
            raise RuntimeError(f"{path}: {loads[name]['words']} words, the text file {loads['text']['words']}")
    cached = run_child({"mode": "load", "path": str(text), "cache": str(cache)})
    print(f"  cached load: {cached['seconds']:.2f} s, +{cached['rss_gb']:.2f} GB", flush=True)
    home = folder / f"home-{words}"
    shutil.rmtree(home, ignore_errors=True)
    run_child({"mode": "build", "home": str(home), "overrides": []})  # warm-up: the corpus's own cache is made
    builds = {"no vectors": run_child({"mode": "build", "home": str(home), "overrides": []})}
    for name, keep in KEEPS.items():
        overrides = [f"model.embeddings.path={text}", f"model.embeddings.keep={keep}"]
        overrides.append(f"model.embeddings.cache_dir={home / '.cache' / 'ner' / 'vectors'}")
        builds[name] = run_child({"mode": "build", "home": str(home), "overrides": overrides})
        print(f"  build, {name}: {json.dumps(builds[name])}", flush=True)
    keeps = {keep: [f"model.embeddings.path={text}", f"model.embeddings.keep={keep}"] for keep in ("all", "train")}
    speed = run_child({"mode": "speed", "home": str(home), "overrides": keeps})
    print(f"  tagging, same model config, alternating: {json.dumps(speed)}", flush=True)
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(home, ignore_errors=True)
    sizes = {name: path.stat().st_size for name, path in files.items()}
    return {
        "words": words,
        "dim": dim,
        "sizes": sizes,
        "loads": loads,
        "cached": cached,
        "builds": builds,
        "speed": speed,
    }


def run_child(job: dict) -> dict:
    env = dict(os.environ)
    if "home" in job:
        env["HOME"] = job["home"]  # the default cache (~/.cache/ner/vectors) of a build goes there
    cmd = [sys.executable, "-m", "benchmarks.vectors", "--child", json.dumps(job)]
    proc = subprocess.run(cmd, cwd=harness.ROOT, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"child {job} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child(job: dict) -> dict:
    """One step in this fresh process: its wall and CPU seconds, and its peak RSS over what the imports left (GB);
    a load imports the reader alone (numpy), a build the training pipeline (torch, datasets, MLflow)."""
    if job["mode"] == "load":
        from ner.data.vectors import read_vectors

        before, start, cpu = peak_gb(), time.perf_counter(), time.process_time()
        vectors = read_vectors(job["path"], cache_dir=job["cache"], note=lambda _: None)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        return {"seconds": seconds, "cpu": cpu, "rss_gb": peak_gb() - before, "words": len(vectors.words)}
    from ner.training import pipeline  # noqa: F401  (imported before the baseline is read)

    torch.set_num_threads(1)
    if job["mode"] == "speed":
        return tag_speeds({keep: _build(overrides) for keep, overrides in job["overrides"].items()})
    before, start, cpu = peak_gb(), time.perf_counter(), time.process_time()
    model = _build(job["overrides"])
    seconds, cpu, peak = time.perf_counter() - start, time.process_time() - cpu, peak_gb()
    return {"seconds": seconds, "cpu": cpu, "peak_gb": peak, "rss_gb": peak - before, **model_size(model)}


def _build(overrides: list[str]):
    from ner.training.pipeline import build

    torch.manual_seed(0)  # the same weights for every table size
    with harness.at_root():
        return build(harness.compose(["experiment=smoke", "trainer.threads=1", *overrides]))[-1]


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KB on Linux


def model_size(model) -> dict:
    """weights.pt as `Tagger.save` writes it (what a logged model carries), and its tensors' bytes (what a loaded
    model holds)."""
    with tempfile.TemporaryDirectory(prefix="bench-vectors-model-") as tmp:
        model.save(tmp)
        disk = (Path(tmp) / "weights.pt").stat().st_size
    tensors = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return {"weights_mb": disk / 1e6, "tensors_mb": tensors / 1e6, "vocab": len(model.featurizer.words)}


def tag_speeds(models: dict, rounds: int = SPEED_ROUNDS) -> dict:
    """Tokens/s of the Engine over the CoNLL-2003 dev sentences for models "all" and "train" (one thread), taking
    turns (the first alternating), best of `rounds` each, and the median of the per-round speed ratio."""
    from ner.data.conll import read_conll
    from ner.model.engine import Engine

    sentences = [s.tokens for s in read_conll(harness.CONLL / "valid.txt")]
    tokens = sum(map(len, sentences))
    engines = {name: Engine(model) for name, model in models.items()}
    times: dict[str, list[float]] = {name: [] for name in engines}
    for engine in engines.values():
        engine.predict(sentences[:200])
    for number in range(rounds):
        for name, engine in engines.items() if number % 2 == 0 else reversed(engines.items()):
            start = time.perf_counter()
            engine.predict(sentences)
            times[name].append(time.perf_counter() - start)
    out = {
        name: {"vocab": len(m.featurizer.words), "tokens_per_s": tokens / min(times[name])}
        for name, m in models.items()
    }
    whole, trimmed = times["all"], times["train"]  # speed ratio all/train = time of train / time of all, per round
    out["all"]["median_ratio"] = float(np.median(np.array(trimmed) / np.array(whole)))
    return out


# --- keep's default: what the vocabulary knows of dev and test -------------------------------------------------------


def coverage_table() -> dict:
    """{(corpus, split): {K: % of tokens whose word (lower-cased, or with digits as 0) is a training word or one of
    the vectors file's first K}} from the shipped 50-d file."""
    digits = re.compile(r"\d")
    rank = {}
    for i, line in enumerate(GLOVE50.read_text(encoding="utf-8").splitlines()):
        rank.setdefault(line.split(" ", 1)[0], i)
    table = {}
    for corpus in ("conll2003", "wnut17"):
        train = set(_tokens(harness.DATA / corpus / "train.txt"))
        for split in ("valid", "test"):
            tokens = _tokens(harness.DATA / corpus / f"{split}.txt")
            row = {}
            for k in COVERAGE_KS:
                limit = len(rank) if k is None else k
                known = sum(
                    any(w in train or rank.get(w, limit) < limit for w in (t, digits.sub("0", t))) for t in tokens
                )
                row["all" if k is None else k] = 100 * known / len(tokens)
            table[(corpus, split)] = row
    return table


def _tokens(path: Path) -> list[str]:
    cols = (line.split() for line in path.read_text(encoding="utf-8").splitlines())
    return [c[0].lower() for c in cols if c and c[0] != "-DOCSTART-"]


# --- the report ------------------------------------------------------------------------------------------------------


def report(results: dict, cover: dict, dim: int, command: str) -> str:
    info = harness.machine()
    lines = [
        "## Pretrained vectors",
        "",
        f"Measured {info['date']} on {info['cpu']} ({info['cores']} cores, shared), load average"
        f" {harness.load_average()} at the end. Each step in a fresh child process; memory is its peak resident set"
        " over what its imports left (`ru_maxrss`); matrix = words x dim x 4 bytes.",
        "",
        f"    {command}",
        "",
        "| file | size | matrix | first load (CPU) | peak RSS | cached load (CPU) | peak RSS |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for n, r in results.items():
        matrix = n * r["dim"] * 4 / 1e9
        for name, load in r["loads"].items():
            cached = r["cached"] if name == "text" else None
            lines.append(
                f"| {n:,} x {r['dim']}, {name} | {r['sizes'][name] / 1e9:.2f} GB"
                f" | {matrix:.2f} GB | {load['seconds']:.1f} s ({load['cpu']:.1f}) | {load['rss_gb']:.2f} GB |"
                + (
                    f" {cached['seconds']:.2f} s ({cached['cpu']:.2f}) | {cached['rss_gb']:.2f} GB |"
                    if cached
                    else " | |"
                )
            )
    lines += [
        "",
        "`ner.training.pipeline.build` (experiment=smoke) with the file, against the same without vectors:",
        "",
    ]
    lines += [
        "| file | run | build (CPU) | peak RSS over none | / matrix | vocabulary | weights.pt | tensors |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for n, r in results.items():
        base = r["builds"]["no vectors"]
        matrix = n * r["dim"] * 4 / 1e9
        for name, b in r["builds"].items():
            over = b["peak_gb"] - base["peak_gb"]
            ratio = f"{over / matrix:.2f}x" if name != "no vectors" else ""
            lines.append(
                f"| {n:,} x {r['dim']} | {name} | {b['seconds']:.1f} s ({b['cpu']:.1f}) | {over:+.2f} GB | {ratio}"
                f" | {b['vocab']:,} | {b['weights_mb']:,.0f} MB | {b['tensors_mb']:,.0f} MB |"
            )
    lines += [
        "",
        "Tagging speed of one model config with its vectors table whole or trimmed to the training words: one process,"
        f" the two taking turns for {SPEED_ROUNDS} rounds, the Engine over CoNLL-2003 dev on one thread; best round"
        " of each, and the median over rounds of all/train (1.00 = the same speed):",
        "",
    ]
    for n, r in results.items():
        speed = r["speed"]
        each = ", ".join(f"keep={k} ({v['vocab']:,} rows) {v['tokens_per_s']:,.0f} tokens/s" for k, v in speed.items())
        lines.append(f"- {n:,} x {r['dim']}: {each}; median all/train {speed['all']['median_ratio']:.2f}")
    ks = list(next(iter(cover.values())))
    lines += [
        "",
        "Tokens of dev and test whose word the vocabulary knows (a training word, or one of the vectors file's first"
        " K), from the shipped 50-d file: the basis of `model.embeddings.keep`'s default (200000).",
        "",
        "| corpus, split | "
        + " | ".join("train only" if k == 0 else f"+{k:,}" if k != "all" else "all 400k" for k in ks)
        + " |",
        "|---|" + "---:|" * len(ks),
    ]
    for (corpus, split), row in cover.items():
        lines.append(f"| {corpus} {split} | " + " | ".join(f"{row[k]:.1f}%" for k in ks) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
