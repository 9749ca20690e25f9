"""The child process of `benchmarks.harness.run_tag`: tag with the `ner` it finds, write the summary as JSON.

    python benchmarks/tag_child.py --summary out.json [--cpu-time] -- model=... input=... output=... [knobs]

Run by file path, with PYTHONPATH (and the working directory) set to the code to measure: this checkout, or an
older commit's worktree (`harness.compare`), so that `import ner` is that code. It imports only the standard
library before `ner`, composes that code's `conf/tag` with the overrides (as `python -m ner.tag` would), calls
`tag(TagConfig(...))` and writes the summary dict it returns, plus peak memory, CPU time, the config and
`ner_file` (where `ner` came from), to --summary. Both layouts of the package are understood: by stage
(`ner.tagging.pipeline.tag`) and the older flat one (`ner.tag.tag`).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import json
import resource
import sys
import time
from pathlib import Path

if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    del sys.path[0]  # benchmarks/ itself: its tag.py, spark.py and train.py must not shadow anything
# An editable install of the project maps `ner` and its submodules to the checkout it was installed from, behind
# sys.path: `import ner.tagging` would find this checkout's subpackage even inside an older commit's `ner`. Only
# PYTHONPATH decides here.
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--summary", type=Path, required=True, help="where the JSON summary goes")
    ap.add_argument("--cpu-time", action="store_true", help="stage timers count CPU time of the main thread")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides of conf/tag/tag.yaml")
    args = ap.parse_args()
    if args.cpu_time:
        time.perf_counter = time.thread_time  # every stage timer of ner's tagging now counts CPU time
    import ner

    layout = "ner.tagging.pipeline" if importlib.util.find_spec("ner.tagging") else "ner.tag"
    pipeline = importlib.import_module(layout)
    import torch
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    package = Path(ner.__file__ or next(iter(ner.__path__))).resolve()
    package = package.parent if package.is_file() else package
    with initialize_config_dir(config_dir=str(package.parent / "conf" / "tag"), version_base="1.3"):
        values = OmegaConf.to_container(compose(config_name="tag", overrides=args.overrides), resolve=True)
    known = {f.name for f in dataclasses.fields(pipeline.TagConfig)}
    cfg = pipeline.TagConfig(**{k: v for k, v in values.items() if k in known})
    summary = pipeline.tag(cfg)
    usage, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    summary.update(
        peak_rss_mib=usage.ru_maxrss / 1024,
        peak_rss_worker_mib=children.ru_maxrss / 1024,
        process_cpu_seconds=usage.ru_utime + usage.ru_stime,
        worker_cpu_seconds=children.ru_utime + children.ru_stime,
        threads=torch.get_num_threads(),
        config=dataclasses.asdict(cfg),
        ner_file=str(ner.__file__ or package),
        layout=layout,
    )
    args.summary.write_text(json.dumps(summary, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
