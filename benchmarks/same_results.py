"""Does a refactor change any result? Train and tag with an older commit and with the working tree, and compare.

    python -m benchmarks.same_results --old 6dc27e0                 # smoke run + one full-size epoch, then tagging
    python -m benchmarks.same_results --old 6dc27e0 --skip-full     # smoke run only (seconds), then tagging

Both sides run `python -m ner.train` as a user would, in a child process with one torch thread (deterministic on
CPU), into a store of their own: `experiment=smoke seed=1`, and unless --skip-full one epoch of the default model
on the whole corpus (the smoke model finds no entity, so its F1 of 0 alone would prove little). The per-epoch dev F1
and training loss, and the final dev and test F1, must be equal to the last bit. Then the model the OLD code
trained is tagged by both sides with `python -m ner.tag`, as raw text (CoNLL-2003 test, a sentence per line) and
as CoNLL input, in fp32 and with the default precision: the output files must be byte-identical. That also shows
that a model saved before the change loads and tags the same after it.

The older commit is checked out with `git worktree` (`harness.worktree`) and imported through PYTHONPATH; both
sides read the data and vectors by absolute path. Exit status 1 if anything differs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import harness

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA = f"data.path={SHARED / 'data' / 'conll2003'}"  # absolute: the older checkout lies in a temporary folder
VECTORS = f"model.embeddings.path={SHARED / 'data' / 'vectors' / 'glove.6B.50d.txt'}"
METRICS = ("dev_f1", "train_loss")
FINALS = ("best_dev_f1", "test_f1", "test_f1_strict")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True, help="the commit to compare with, e.g. the one before a refactor")
    ap.add_argument("--skip-full", action="store_true", help="only the smoke run (no full-size epoch)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="same-results-") as tmp, harness.worktree(args.old) as old:
        tmp = Path(tmp)
        runs = [("smoke", ["experiment=smoke", "seed=1"])]
        if not args.skip_full:
            runs.append(("full-1-epoch", ["trainer.max_epochs=1", "trainer.progress=false", VECTORS]))
        results, same = {}, True
        for side, tree in (("old", old), ("new", ROOT)):
            store = f"sqlite:///{tmp / side / 'mlflow.db'}"
            (tmp / side).mkdir()
            for name, overrides in runs:
                overrides = [*overrides, DATA, "trainer.threads=1", "tracking.grad_profile_every=0"]
                overrides += [f"tracking.uri={store}", f"tracking.experiment={name}"]
                run(tree, ["-m", "ner.train", *overrides])
            results[side] = read_runs(store, [name for name, _ in runs])
        for name, _ in runs:
            old_run, new_run = results["old"][name], results["new"][name]
            for key in (*METRICS, *FINALS):
                equal = old_run[key] == new_run[key]
                same &= equal
                verdict = "same" if equal else "DIFFERENT"
                print(f"{name:13s} {key:15s} {verdict}: old {old_run[key]}  new {new_run[key]}")
        model = f"runs:/{results['old'][runs[-1][0]]['run_id']}/model"
        store = f"sqlite:///{tmp / 'old' / 'mlflow.db'}"
        same &= compare_tagging(old, model, store, tmp)
    print("everything is the same" if same else "SOMETHING DIFFERS")
    return 0 if same else 1


def run(tree: Path, argv: list[str]) -> None:
    """`python <argv>` with `tree`'s package first on the path and `tree` as the working directory."""
    env = {**os.environ, "PYTHONPATH": str(tree), "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.run([sys.executable, *argv], cwd=tree, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{tree}: python {' '.join(argv)} failed:\n{proc.stderr[-3000:]}")


def read_runs(uri: str, experiments: list[str]) -> dict[str, dict]:
    import mlflow

    from ner.tracking import store

    client = mlflow.MlflowClient(uri)
    out = {}
    for name in experiments:
        (run_,) = client.search_runs([client.get_experiment_by_name(name).experiment_id])
        history = {k: [m.value for m in store.history(client, run_.info.run_id, k)] for k in METRICS}
        final = store.metrics_of(run_)
        out[name] = {"run_id": run_.info.run_id, **history, **{k: final[k] for k in FINALS}}
    return out


def compare_tagging(old: Path, model: str, store: str, tmp: Path) -> bool:
    """The old side's model tagged by both sides: every output byte-identical."""
    conll = SHARED / "data" / "conll2003" / "test.txt"
    text = tmp / "news.txt"
    sentences = [s.split("\n") for s in conll.read_text(encoding="utf-8").split("\n\n")]
    lines = [" ".join(w.split()[0] for w in s if w.strip() and not w.startswith("-DOCSTART-")) for s in sentences]
    text.write_text("\n".join(line for line in lines if line) + "\n", encoding="utf-8")
    inputs = {"jsonl": [f"input={text}", "one_per_line=true"], "conll": [f"input={conll}", "input_format=conll"]}
    same = True
    for precision in ("fp32", "auto"):
        for fmt, args in inputs.items():
            outputs = {}
            for side, tree in (("old", old), ("new", ROOT)):
                outputs[side] = tmp / side / f"tagged-{precision}.{fmt}"
                argv = ["-m", "ner.tag", f"model={model}", f"tracking_uri={store}", *args, f"output_format={fmt}"]
                run(tree, [*argv, f"output={outputs[side]}", f"precision={precision}", "progress=false"])
            equal = outputs["old"].read_bytes() == outputs["new"].read_bytes()
            same &= equal
            size = outputs["new"].stat().st_size
            verdict = "byte-identical" if equal else "DIFFERENT"
            print(f"ner.tag {fmt:5s} precision={precision:4s} {verdict} ({size:,} B)")
    return same


if __name__ == "__main__":
    sys.exit(main())
