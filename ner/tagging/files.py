"""Documents in, records out, for `ner.tag`: the plan of a run (inputs, outputs, lock) and what a resume checks.

Reading is `ner.tagging.readers` (inputs, encodings, documents), writing `ner.tagging.writers` (formats, atomic
files, devices, the lock); their names stay importable from here. Output may be one file (every input document,
each record naming its source) or, when `output` is an existing folder or ends with "/", one file per input file,
named after it (`news/a.txt` -> `out/a.txt.jsonl`). An output, its `.partial`, `.progress.json` and `.lock` are
never read back as input, also when they lie inside the input folder.

One run at a time: planning takes the output's lock (`<output>.lock`, or `.ner-tag.lock` inside an output folder)
before it reads any resume state, so a second run on the same output stops at once, naming the first; taking it is
also the first write, so a read-only folder or a full disk is one line before the model is loaded.

`resume=true` continues an interrupted output from `<output>.partial` only if everything it was made from is
unchanged: the settings of `TagConfig.resume_settings`, the partial file's recorded bytes (by SHA-256: another
writer or an edit is found), each input file's bytes read so far (by SHA-256; a file appended to since is fine),
and the model's run id and weights (`check_model`, once the model is resolved, before it is loaded). It then
truncates the partial file to the recorded point, skips that many input documents (checking that the last one is
the same document) and continues; an output that is already complete is left as it is.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ner.evaluation.html import TAG_PAGE_MARK
from ner.tagging.readers import (  # noqa: F401 - re-exported: spark.py, tests and older imports use files.*
    BINARY_PROBE,
    DECODE_ERRORS,
    INPUT_FORMATS,
    Document,
    Reader,
    TagError,
    check_encoding,
    chunks,
    decode,
    discover,
    is_binary,
    lines,
)
from ner.tagging.writers import (  # noqa: F401 - re-exported
    OUTPUT_FORMATS,
    SPANS_HEADER,
    InputRecord,
    OutputLock,
    Router,
    Target,
    Writer,
    escape_line_separators,
    prefix_hash,
    serialise,
    write_error,
)

FOLDER_LOCK = ".ner-tag.lock"  # inside an output folder (hidden: never read as input)
_JSONL_RECORD = re.compile(rb'^\{"source": "(?:[^"\\]|\\.)*", "doc": \d+, "text": "')  # how writers.serialise starts
_SIDE_FILES = ("", ".partial", ".progress.json", ".progress.json.tmp", ".lock")


@dataclass
class Plan:
    targets: list[Target]
    skipped: list[str] = field(default_factory=list)  # binary input files left out
    earlier_outputs: list[str] = field(default_factory=list)  # files an earlier ner.tag wrote, left out
    folder_output: bool = False
    lock: OutputLock | None = None  # held from planning to the end of the run: `release` it

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()


def plan(input_spec: str, output: str, fmt: str, resume: bool, settings: dict) -> Plan:
    """Input files, binary files left out, and the output file(s) each feeds, locked, with resume state read in."""
    if fmt not in OUTPUT_FORMATS:
        raise TagError(f"output_format={fmt!r} is not one of {', '.join(OUTPUT_FORMATS)}")
    if not output:
        raise TagError("output= is required: a file (all documents in one) or a folder ending in / (one per input)")
    root, files, named = discover(input_spec)
    files = [p for p in files if not _is_output(p, Path(output))]
    if not files:
        raise TagError(f"input {input_spec!r} holds no files besides the output {output!r}")
    text_files, skipped, earlier = [], [], []
    for path in files:
        if not named and is_binary(path):  # a file named alone is read as text, whatever it holds
            skipped.append(str(path))
        elif not named and is_tag_output(path):
            earlier.append(str(path))
        else:
            check_encoding(path)  # UTF-16/32: said now, before a model is loaded
            text_files.append(path)
    if not text_files and earlier:
        raise TagError(
            f"input {input_spec!r} holds only outputs of ner.tag ({earlier[0]}, ...); name one alone to tag it"
        )
    folder = output.endswith(("/", os.sep)) or Path(output).is_dir()
    if folder:
        ext = OUTPUT_FORMATS[fmt]
        targets = [Target(_followed(Path(output) / f"{_relative(p, root)}{ext}"), [p]) for p in text_files]
    else:
        targets = [Target(_followed(Path(output)), text_files)]
    for target in targets:
        _check_kind(target, resume)
    work = Plan(targets, skipped, earlier, folder, _lock(output, folder, targets))
    try:
        for target in targets:
            _read_resume_state(target, resume, settings)
    except BaseException:
        work.release()
        raise
    return work


def is_tag_output(path: Path) -> bool:
    """Whether `path` is a JSONL or spans output of an earlier `ner.tag` (by how its first bytes read): in a folder or
    glob it is left out, so that tagging a folder twice, into another output inside it, does not tag its records."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(b"<!DOCTYPE html>\n" + TAG_PAGE_MARK.encode()):
        return True
    return head.startswith(SPANS_HEADER.encode()) or _JSONL_RECORD.match(head) is not None


def check_model(targets: list[Target], model: dict) -> None:
    """Refuse to continue a partial output made with another model (run id or weights), saying which."""
    for target in targets:
        if target.done or not target.skip:
            continue
        before = target.model or {}
        if (before.get("run_id"), before.get("weights_sha256")) != (model.get("run_id"), model.get("weights_sha256")):
            again = f"model={before['resolved']}, or " if before.get("resolved") else ""
            raise TagError(
                f"resume: {target.partial} was tagged with {_describe(before)}, but model={model['model']} is now "
                f"{_describe(model)}; finish it with {again}rerun with resume=false"
            )


def _describe(model: dict) -> str:
    if not model:
        return "an unrecorded model"
    run = f"run {model['run_id']}" if model.get("run_id") else model.get("resolved", "a model")
    return f"{run} (weights {str(model.get('weights_sha256'))[:12]})"


def _followed(path: Path) -> Path:
    """An output that is a symlink is the file it names (written there, not replacing the link)."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _check_kind(target: Target, resume: bool) -> None:
    """Regular file (or none yet): atomic; device or FIFO: written straight through; anything else: refused."""
    try:
        mode = os.stat(target.output).st_mode
    except FileNotFoundError:
        return
    except OSError as err:
        raise TagError(f"output {target.output}: {err.strerror}") from None
    if stat.S_ISREG(mode):
        return
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
        target.stream = True
        if resume:
            kind = "FIFO" if stat.S_ISFIFO(mode) else "device"
            raise TagError(
                f"resume=true: output {target.output} is a {kind}, written straight through, so nothing of it can "
                "be resumed; rerun with resume=false"
            )
        return
    kind = "folder" if stat.S_ISDIR(mode) else "socket" if stat.S_ISSOCK(mode) else "special file"
    raise TagError(f"output {target.output} is a {kind}: write to a file, a folder ending in /, a device or a FIFO")


def _lock(output: str, folder: bool, targets: list[Target]) -> OutputLock | None:
    """The run's output lock, taken now; None for a single device or FIFO output (shared by design)."""
    if folder:
        path = Path(output) / FOLDER_LOCK
    elif targets[0].stream:
        return None
    else:
        path = targets[0].output.with_name(targets[0].output.name + ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise write_error(err, path.parent, 0) from None
    return OutputLock(path).acquire(output)


def _is_output(path: Path, output: Path) -> bool:
    """Whether `path` is (or is beside, as .partial/.progress.json/.lock) an output of this run: never read it."""
    path, output = path.resolve(), output.resolve()
    names = {output.name + suffix for suffix in _SIDE_FILES}
    return output in path.parents or (path.parent == output.parent and path.name in names)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return path.name


def _read_resume_state(target: Target, resume: bool, settings: dict) -> None:
    """Fill `skip`/`done` and the hashes from the files a previous run left, checked; without resume, start over."""
    if not resume or target.stream:
        return
    if target.output.is_file() and not target.partial.exists():
        target.done = True
        return
    if not (target.partial.is_file() and target.progress.is_file()):
        return  # nothing usable was written: start over
    try:
        state = json.loads(target.progress.read_text(encoding="utf-8"))
        documents, size, last, before = state["documents"], state["bytes"], state["last"], state["settings"]
        digest, inputs, model = state["output_sha256"], state["inputs"], state["model"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise TagError(f"{target.progress}: unreadable resume record ({err}); rerun with resume=false") from None
    if before != settings:
        changed = ", ".join(
            f"{k}={before.get(k)!r}->{settings.get(k)!r}"
            for k in sorted(set(settings) | set(before))
            if before.get(k) != settings.get(k)
        )
        raise TagError(f"{target.partial} was written with other settings ({changed}); rerun with resume=false")
    if target.partial.stat().st_size < size:
        raise TagError(f"{target.partial} is shorter than its resume record says; rerun with resume=false")
    sha, _ = prefix_hash(target.partial, size)
    if sha.hexdigest() != digest:
        raise TagError(
            f"resume: the first {size:,} bytes of {target.partial} are not the ones its resume record describes "
            "(written by another process, or edited); rerun with resume=false"
        )
    target.inputs = InputRecord.verify(inputs, target.sources, target.partial)
    target.skip, target.skip_bytes, target.last, target.hashed, target.model = documents, size, last, sha, model
