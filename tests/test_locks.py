"""One process per run and per output: a second one is refused at once, naming the holder; a dead holder's lock is
taken over; a resume whose config, input or model changed is refused before it touches anything."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from ner.tagging.files import TagError
from ner.training import checkpoint
from ner.training.pipeline import train
from tests.conftest import ROOT, compose_train
from tests.tag_fixtures import read_jsonl, run_tag, tiny_model_dir  # noqa: F401 (fixture)
from tests.test_faults import history

HOLD = """
import sys, time
from ner.training import checkpoint
checkpoint.hold(sys.argv[1], "test")
print("holding", flush=True)
time.sleep(120)
"""


def holder(folder: Path) -> subprocess.Popen:
    """Another process that holds a run's lock, as a training of that run would."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout.readline().strip() == "holding"
    return proc


def trained(tmp_path: Path, *overrides: str) -> dict:
    return train(
        compose_train(
            tmp_path,
            "tracking.experiment=locks",
            f"trainer.checkpoint_dir={tmp_path / 'ckpt'}",
            "trainer.keep_checkpoint=true",
            "trainer.max_epochs=2",
            "trainer.patience=0",
            "tracking.log_model=false",
            *overrides,
        )
    )


def run_status(tmp_path: Path, run_id: str) -> str:
    return mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(run_id).info.status


def test_a_second_process_on_a_run_is_refused_at_once_and_a_dead_holders_lock_is_taken_over(tmp_path):
    first = trained(tmp_path)
    run_id = first["run_id"]
    checkpoint.release(checkpoint.folder(tmp_path / "ckpt", run_id))  # as if this process had ended
    other = holder(checkpoint.folder(tmp_path / "ckpt", run_id))
    try:
        t0 = time.time()
        with pytest.raises(checkpoint.CheckpointError) as refused:
            trained(tmp_path, "trainer.resume=last", "trainer.max_epochs=3")
        assert time.time() - t0 < 30
        message = str(refused.value)
        assert f"run {run_id} is being trained by pid {other.pid} on {socket.gethostname()} since " in message
        assert "\n" not in message
        assert run_status(tmp_path, run_id) == "FINISHED"  # refused before the run was reopened
    finally:
        other.send_signal(signal.SIGKILL)  # a holder that dies without a word
        other.wait()
    resumed = trained(tmp_path, "trainer.resume=last", "trainer.max_epochs=3")  # the stale lock is taken over
    assert resumed["run_id"] == run_id and resumed["epochs"] == 3


def test_a_resume_with_other_overrides_names_the_keys_and_leaves_the_run_as_it_was(tmp_path):
    vectors = f"model.embeddings.path={Path(__file__).parent / 'fixtures' / 'vectors.txt'}"  # 5-d: word_dim 5 is used
    first = trained(tmp_path, vectors)
    run_id = first["run_id"]
    for override, key in (("model.hidden_size=7", "model.hidden_size"), ("trainer.lr=0.3", "trainer.lr")):
        with pytest.raises(checkpoint.CheckpointError, match=rf"trained with another config \({key}: "):
            trained(tmp_path, vectors, f"trainer.resume={run_id}", override)
        assert run_status(tmp_path, run_id) == "FINISHED"  # still found by best:, not turned FAILED
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert [m.step for m in history(client, run_id, "dev_f1")] == [1, 2]
    more = trained(tmp_path, vectors, f"trainer.resume={run_id}", "trainer.max_epochs=3", "trainer.threads=1")
    assert more["epochs"] == 3


# ---------------------------------------------------------------------------------------------------- tagging


def tag_cli(tmp_path: Path, model: Path, source: Path, output: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "ner.tag", f"model={model}", f"input={source}", f"output={output}",
           "one_per_line=true", "chunk_docs=50", "workers=0", "threads=1", "progress=false", *extra]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_a_second_tag_run_on_one_output_is_refused_in_one_line_and_the_first_finishes_whole(
    tiny_model_dir,  # noqa: F811
    tmp_path,
):
    source = tmp_path / "in.txt"
    source.write_text("Peter visited Paris on Monday .\n" * 60_000, encoding="utf-8")
    out = tmp_path / "out.jsonl"
    first = tag_cli(tmp_path, tiny_model_dir, source, out)
    deadline = time.time() + 60
    while not (tmp_path / "out.jsonl.progress.json").exists():  # the first one is writing
        assert first.poll() is None and time.time() < deadline, first.communicate()
        time.sleep(0.05)
    second = tag_cli(tmp_path, tiny_model_dir, source, out)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 2
    (line,) = err.strip().splitlines()
    assert line.startswith(f"error: output={out} is being written by pid {first.pid} on {socket.gethostname()}")
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert len(read_jsonl(out)) == 60_000  # every line whole: json.loads of each
    assert not (tmp_path / "out.jsonl.lock").exists()


def test_a_lock_left_by_a_killed_tag_run_is_taken_over(tiny_model_dir, tmp_path):  # noqa: F811
    source = tmp_path / "in.txt"
    source.write_text("Peter visited Paris .\n" * 20_000, encoding="utf-8")
    out = tmp_path / "out.jsonl"
    first = tag_cli(tmp_path, tiny_model_dir, source, out)
    deadline = time.time() + 60
    while not (tmp_path / "out.jsonl.progress.json").exists():
        assert first.poll() is None and time.time() < deadline
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert (tmp_path / "out.jsonl.lock").exists()  # left behind, but nobody holds it
    summary = run_tag(model=tiny_model_dir, input=source, output=out, one_per_line=True, resume=True)
    assert summary["documents_resumed"] > 0 and len(read_jsonl(out)) == 20_000


def test_a_resume_refuses_an_input_edited_since_the_partial_output(tiny_model_dir, tmp_path):  # noqa: F811
    source = tmp_path / "in.txt"
    source.write_bytes(b"Peter left .\nParis .\nBoris .\nbad \xff\nMary .\n")
    args = {"model": tiny_model_dir, "input": source, "output": tmp_path / "o.jsonl", "one_per_line": True}
    with pytest.raises(TagError, match="invalid UTF-8"):
        run_tag(**args, chunk_docs=1)  # three documents written, then stopped
    source.write_bytes(b"Mary left .\nParis .\nBoris .\nbad \xff\nMary .\n")  # same length, first line edited
    with pytest.raises(TagError, match=rf"resume: input {source} changed since .* its first 29 bytes differ"):
        run_tag(**args, resume=True, on_decode_error="replace")
    source.write_bytes(b"Peter left .\nParis .\nBoris .\nbad \xff\nMary .\nappended .\n")  # appended to: fine
    summary = run_tag(**args, resume=True, on_decode_error="replace")
    assert (summary["documents_resumed"], summary["documents"]) == (3, 3)


def test_a_resume_refuses_a_partial_output_written_to_by_someone_else(tiny_model_dir, tmp_path):  # noqa: F811
    source = tmp_path / "in.txt"
    source.write_bytes(b"Peter left .\nParis .\nBoris .\nbad \xff\nMary .\n")
    args = {"model": tiny_model_dir, "input": source, "output": tmp_path / "o.jsonl", "one_per_line": True}
    with pytest.raises(TagError, match="invalid UTF-8"):
        run_tag(**args, chunk_docs=1)
    partial = tmp_path / "o.jsonl.partial"
    data = partial.read_bytes()
    partial.write_bytes(data[:10] + b'{"torn' + data[16:])  # a second writer's bytes inside the recorded part
    with pytest.raises(TagError, match=r"resume: the first [\d,]+ bytes of .*o.jsonl.partial are not the ones"):
        run_tag(**args, resume=True, on_decode_error="replace")


def test_a_resume_refuses_another_model_and_says_which(tiny_model_dir, tmp_path):  # noqa: F811
    import shutil

    import torch

    other = tmp_path / "other-model"
    shutil.copytree(tiny_model_dir, other)
    weights = torch.load(other / "weights.pt", weights_only=True)
    first = next(k for k, v in weights.items() if v.is_floating_point() and v.numel())
    weights[first] = weights[first] + 1.0
    torch.save(weights, other / "weights.pt")
    source = tmp_path / "in.txt"
    source.write_bytes(b"Peter left .\nParis .\nbad \xff\nMary .\n")
    args = {"input": source, "output": tmp_path / "o.jsonl", "one_per_line": True}
    with pytest.raises(TagError, match="invalid UTF-8"):
        run_tag(model=tiny_model_dir, **args, chunk_docs=1)
    with pytest.raises(TagError, match=rf"was tagged with {tiny_model_dir} \(weights [0-9a-f]{{12}}\), but model="):
        run_tag(model=other, **args, resume=True, on_decode_error="replace")
    link = tmp_path / "same-model"
    link.symlink_to(tiny_model_dir)  # the same weights under another name: fine
    summary = run_tag(model=link, **args, resume=True, on_decode_error="replace")
    assert summary["documents_resumed"] == 2
