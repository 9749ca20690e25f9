"""`python -m ner.tag model=<URI> input=<file|folder|glob> output=<file|folder/>`: tag text in bulk, fast.

The work is `ner.tagging.pipeline.tag(cfg)`; this entry point adds signals, exit codes, one-line errors and
the printed summary.
"""

from __future__ import annotations

import signal
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from ner.config import ConfigError, checked, help_text, quiet_mlflow
from ner.data.conll import DataError
from ner.evaluation import report
from ner.tagging import spark
from ner.tagging.files import TagError
from ner.tagging.pipeline import TagConfig, tag
from ner.tracking import model_uri


def print_summary(summary: dict) -> None:
    done = (
        f", {summary['outputs_already_complete']} output(s) already complete"
        if summary["outputs_already_complete"]
        else ""
    )
    resumed = f" (+{summary['documents_resumed']:,} resumed)" if summary["documents_resumed"] else ""
    load = summary["stage_seconds"].get("load", 0.0)
    rate = summary["tokens"] / max(summary["seconds"] - load, 1e-9)  # the tagging rate: a short file is all load
    precision = f", {summary['precision']}" if "precision" in summary else ""
    print(
        f"tagged {summary['documents']:,} documents{resumed}, {summary['tokens']:,} tokens, "
        f"{summary['entities']:,} entities from {summary['files']:,} file(s) in {summary['seconds']:.1f} s: "
        f"model load {load:.1f} s, then {rate:,.0f} tokens/s{precision} -> {summary['output']}{done}"
    )
    if summary["binary_files_skipped"]:
        print(f"skipped {summary['binary_files_skipped']} binary file(s)")
    if summary.get("errors"):
        print(f"{summary['errors']:,} document(s) not tagged: see the `error` field of their records")
    if summary["decode_errors_replaced"]:
        print(f"replaced undecodable bytes in {summary['decode_errors_replaced']} document(s)")
    if "scores" in summary:
        scores = summary["scores"]
        keys = ["precision", "recall", "f1", "f1_strict"] + sorted(
            k for k in scores if k.startswith("f1_") and k != "f1_strict"
        )
        print("\n" + report.table({"input": scores}, keys))


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


OmegaConf.register_new_resolver("ner_help", help_text, replace=True)  # conf's hydra.help.template


@hydra.main(config_path="../conf/tag", config_name="tag", version_base="1.3")
def main(cfg: DictConfig) -> None:
    quiet_mlflow()
    signal.signal(signal.SIGTERM, _raise_interrupt)  # SIGTERM keeps the partial output resumable, like Ctrl-C
    try:
        summary = tag(checked(TagConfig, OmegaConf.to_container(cfg, resolve=True), ""))
    except (ConfigError, TagError, model_uri.ModelError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(
            f"interrupted: the finished part is kept in {cfg.output}.partial (or one .partial per file);"
            " rerun with resume=true to continue",
            file=sys.stderr,
        )
        sys.exit(130)
    print_summary(summary)


if __name__ == "__main__":
    sys.argv = spark.hydra_args(sys.argv)  # spark.master=local[2], spark.conf.<key>=<value> as typed
    main()
