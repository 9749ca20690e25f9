"""Outputs that are not plain files, inputs that loop or hold the output, encodings that are not UTF-8, full and
read-only disks, and the worker processes a killed `ner.tag` leaves: each is handled or said in one line."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ner.tagging.files import TagError
from tests.conftest import ROOT
from tests.tag_fixtures import read_jsonl, run_tag, tiny_model_dir  # noqa: F401 (fixture)

TEXT = "Angela Merkel visited Paris .\nPeter left Germany .\n"


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size, ro) -> a fresh tmpfs folder (root only: that is how a full or read-only disk is made here)."""
    mounted = []

    def mount(size: str, ro: bool = False) -> Path:
        where = tmp_path / f"fs{len(mounted)}"
        where.mkdir()
        options = f"size={size}" + (",ro" if ro else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}): needs root")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", str(where)], check=False)


def test_an_output_symlink_is_followed_to_the_file_it_names(tiny_model_dir, tmp_path):  # noqa: F811
    (tmp_path / "in.txt").write_text(TEXT, encoding="utf-8")
    real, link = tmp_path / "real.jsonl", tmp_path / "link.jsonl"
    link.symlink_to(real)
    run_tag(model=tiny_model_dir, input=tmp_path / "in.txt", output=link, one_per_line=True)
    assert link.is_symlink() and link.resolve() == real
    assert len(read_jsonl(real)) == 2


def test_a_device_is_written_straight_through_never_replaced(tiny_model_dir, tmp_path):  # noqa: F811
    (tmp_path / "in.txt").write_text(TEXT, encoding="utf-8")
    null = tmp_path / "null.jsonl"
    null.symlink_to("/dev/null")  # what output=/dev/null does, without risking the system's /dev/null
    summary = run_tag(model=tiny_model_dir, input=tmp_path / "in.txt", output=null, one_per_line=True)
    assert summary["documents"] == 2
    assert null.is_symlink() and stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert not Path("/dev/null.partial").exists() and not Path("/dev/null.lock").exists()
    with pytest.raises(TagError, match=r"resume=true: output /dev/null is a device, .*rerun with resume=false"):
        run_tag(model=tiny_model_dir, input=tmp_path / "in.txt", output=null, one_per_line=True, resume=True)


def test_a_fifo_is_written_straight_through(tiny_model_dir, tmp_path):  # noqa: F811
    (tmp_path / "in.txt").write_text(TEXT, encoding="utf-8")
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    run_tag(model=tiny_model_dir, input=tmp_path / "in.txt", output=fifo, one_per_line=True)
    reader.join(timeout=30)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert [line.count(b'"source"') for line in received[0].splitlines()] == [1, 1]


def test_a_socket_output_is_refused_in_one_line(tiny_model_dir, tmp_path):  # noqa: F811
    (tmp_path / "in.txt").write_text(TEXT, encoding="utf-8")
    path = tmp_path / "out.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    try:
        with pytest.raises(TagError, match="is a socket: write to a file, a folder ending in /, a device or a FIFO"):
            run_tag(model="/not/loaded", input=tmp_path / "in.txt", output=path)
    finally:
        server.close()


def test_an_output_inside_the_input_folder_is_never_read_back(tiny_model_dir, tmp_path):  # noqa: F811
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text(TEXT, encoding="utf-8")
    for output in (docs / "out.jsonl", docs / "tagged/"):
        for _ in range(2):
            summary = run_tag(
                model=tiny_model_dir, input=docs, output=f"{output}/" if output.name == "tagged" else output
            )
            assert summary["files"] == 1 and summary["documents"] == 1


def test_a_glob_through_symlink_loops_reads_each_file_once_and_ends(tiny_model_dir, tmp_path):  # noqa: F811
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "a.txt").write_text(TEXT, encoding="utf-8")
    (docs / "sub" / "b.txt").write_text(TEXT, encoding="utf-8")
    (docs / "sub" / "up").symlink_to(docs)  # two loops
    (docs / "sub" / "self").symlink_to(docs / "sub")
    t0 = time.time()
    summary = run_tag(model=tiny_model_dir, input=f"{docs}/**/*.txt", output=tmp_path / "o.jsonl")
    assert summary["files"] == 2 and summary["documents"] == 2 and time.time() - t0 < 60
    assert sorted(r["source"] for r in read_jsonl(tmp_path / "o.jsonl")) == [
        str(docs / "a.txt"),
        str(docs / "sub/b.txt"),
    ]
    summary = run_tag(model=tiny_model_dir, input=docs, output=tmp_path / "folder.jsonl")  # a folder: the same
    assert summary["files"] == 2


@pytest.mark.parametrize(
    ("encoding", "name"), [("utf-16", "UTF-16 LE"), ("utf-16-be", "UTF-16 BE"), ("utf-32", "UTF-32 LE")]
)
def test_a_utf16_or_utf32_file_is_named_for_what_it_is(tmp_path, encoding, name):
    path = tmp_path / "in.txt"
    data = TEXT.encode(encoding)
    path.write_bytes(data if encoding != "utf-16-be" else b"\xfe\xff" + data)
    for extra in ({}, {"on_decode_error": "replace"}, {"one_per_line": True, "on_decode_error": "replace"}):
        with pytest.raises(TagError, match=rf"{path}: {name} text \(.*byte-order mark\), .*iconv -f"):
            run_tag(model="/not/loaded", input=path, output=tmp_path / "o.jsonl", **extra)
    with pytest.raises(TagError, match=rf"{name} text"):  # in a folder too: not skipped as binary
        run_tag(model="/not/loaded", input=tmp_path, output=tmp_path / "out/")


def test_a_read_only_output_folder_is_one_line_before_the_model_loads(tmp_path, tmpfs):
    (tmp_path / "in.txt").write_text(TEXT, encoding="utf-8")
    folder = tmpfs("1M", ro=True)
    with pytest.raises(TagError, match=rf"^{folder}: not writable \(Read-only file system\); choose another output=$"):
        run_tag(model="/not/loaded", input=tmp_path / "in.txt", output=folder / "o.jsonl")


def test_a_full_disk_is_one_line_before_the_model_loads_and_while_tagging(tiny_model_dir, tmp_path, tmpfs):  # noqa: F811
    (tmp_path / "in.txt").write_text(TEXT * 2000, encoding="utf-8")
    full = tmpfs("64k")
    _fill(full)
    with pytest.raises(TagError, match=rf"^{full}: the disk is full; free space, or choose another output=$"):
        run_tag(model="/not/loaded", input=tmp_path / "in.txt", output=full / "o.jsonl")
    small = tmpfs("64k")  # room for the lock and a few chunks, not for the whole output
    with pytest.raises(TagError, match=r"o.jsonl.partial: the disk is full after [\d,]+ documents \(the finished part"):
        run_tag(model=tiny_model_dir, input=tmp_path / "in.txt", output=small / "o.jsonl", one_per_line=True,
                chunk_docs=50)  # fmt: skip
    assert not list(small.glob("*.tmp")) and (small / "o.jsonl.progress.json").is_file()


def _fill(folder: Path) -> None:
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"x" * 4096):
            pass
    except OSError:
        pass  # full
    finally:
        os.close(fd)


def children(pid: int) -> set[int]:
    """Every descendant of `pid` (from /proc/<pid>/task/*/children)."""
    found, todo = set(), [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*/children"):
            try:
                kids = {int(k) for k in task.read_text().split()}
            except OSError:
                continue
            todo.extend(kids - found)
            found |= kids
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie has ended; only its parent's wait is missing


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_kill_9_of_tag_with_workers_leaves_no_process_behind(tiny_model_dir, tmp_path):  # noqa: F811
    (tmp_path / "in.txt").write_text("Peter visited Paris on Monday .\n" * 200_000, encoding="utf-8")
    cmd = [sys.executable, "-m", "ner.tag", f"model={tiny_model_dir}", f"input={tmp_path / 'in.txt'}",
           f"output={tmp_path / 'o.jsonl'}", "one_per_line=true", "workers=2", "chunk_chars=20000",
           "progress=false"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, kids = time.time() + 90, set()
    while time.time() < deadline and not (tmp_path / "o.jsonl.progress.json").exists():  # workers are tagging
        assert proc.poll() is None
        kids |= children(proc.pid)
        time.sleep(0.1)
    kids |= children(proc.pid)
    assert len(kids) >= 3, kids  # two workers and the resource tracker
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(alive(k) for k in kids):
        time.sleep(0.1)
    left = [k for k in kids if alive(k)]
    for k in left:  # don't leak them into the rest of the suite
        os.kill(k, signal.SIGKILL)
    assert not left, f"still running after kill -9 of their parent: {left}"
