"""Hydra multirun <-> MLflow: one parent run per sweep, one child run per job, a summary table when it ends.

`conf/hydra/callbacks/mlflow_sweep.yaml` registers `MlflowSweepCallback` for every `python -m ner.train -m ...`.
The same record comes out whatever runs the jobs: Hydra's basic launcher (one after another, in this process),
joblib (loky worker processes on this machine), Ray (workers of a local or remote cluster) or submitit (Slurm).
Where each hook runs (checked in hydra/core/utils.py `run_job` and the launcher plugins):

* `on_multirun_start` / `on_multirun_end`: the launching process. The parent run is opened and closed here.
* `on_job_start` / `on_job_end`: wherever the job runs. The launchers pickle this callback with every job (it is
  part of the HydraContext they ship), so the copy there knows `parent_id`. `on_job_start` puts it in the job's
  environment (`store.PARENT_RUN_ENV`), where `store.run` finds it and tags the job's run
  `mlflow.parentRunId=<parent>`; in the basic launcher the parent is simply the active run and the job's run is
  nested under it. `on_job_end` tags the child with its job number (`hydra.job.num`) and records a failure.
  Nothing that these two hooks learn comes back to the launching process, so
* the summary is built from the store: `on_multirun_end` searches the parent's children (tag
  `mlflow.parentRunId`), orders them by job number and reads their metrics.

Failed jobs: Hydra's run_job catches a job's exception into its JobReturn, and the sweepers re-raise it after the
batch, which ends the sweep and skips `on_multirun_end`. `on_job_end` (in the job's process) records the failure:
the job's run is already FAILED if it got as far as `store.run`, otherwise a FAILED child is created here; it
prints the traceback and marks the JobReturn completed with no value, so the sweep goes on (the Optuna sweeper
tells a trial without a value as FAIL). As `make -k` does, the process still exits non-zero at the end if any job
failed, unless `exit_code_on_failure=0` (the Optuna search sets that: a diverging trial is an expected outcome).

A sweep that dies itself (a launcher that cannot start its workers, Ctrl-C) never reaches `on_multirun_end`: at
exit, the parent gets the summary of whatever ran, a note saying why it ended, and status FAILED (KILLED for a
stop that was asked for), never an empty RUNNING or FINISHED run.

Past 300 lines because the cross-process bookkeeping above and the summary table's helpers (mean, std, formatting,
CSV) live together: the study and the benchmarks print their tables with the same ones.
"""

from __future__ import annotations

import atexit
import csv
import dataclasses
import io
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ner.tracking import store

METRICS = ("best_dev_f1", "test_f1", "test_f1_strict")  # the final metrics train.py logs, in table order
SWEEP_TAG = "sweep"  # "parent" on the sweep's run, the job number on each child
_SWEEP_ERRORS: list[str] = []  # why the sweep itself died, if it did (note_sweep_error): read at exit


@dataclass
class JobRecord:
    """One job of the sweep, as the summary needs it."""

    num: int
    overrides: list[str]
    status: str  # FINISHED | FAILED | KILLED
    run_id: str | None = None
    run_name: str = ""
    error: str = ""
    setting: str = ""  # filled in by summary_files: the overrides that differ between jobs, seed excepted
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)


class MlflowSweepCallback(Callback):
    """Opens the sweep's parent run, links and records each job, writes the summary table when the sweep ends."""

    def __init__(self, run_name: str | None = None, exit_code_on_failure: int = 1) -> None:
        self.run_name = run_name
        self.exit_code_on_failure = exit_code_on_failure
        self.parent_id: str | None = None
        self.sweep_dir: Path | None = None
        self._job_started_ms = 0  # in the job's process: when its job started (its run starts later)

    # --- Hydra hooks -------------------------------------------------------------------------------------------

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        overrides = list(config.hydra.overrides.task)
        search = _search_space(config)
        parsed = OverridesParser.create().parse_overrides(overrides)
        swept = [o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override()]
        kind = "optuna" if "optuna" in str(OmegaConf.select(config, "hydra.sweeper._target_")) else "sweep"
        name = self.run_name or "-".join([kind, *(k.split(".")[-1] for k in [*swept, *search])])[:100]
        experiment_id = store.connect(tracking_config(config))
        self.sweep_dir = Path(config.hydra.sweep.dir)
        tags = {
            SWEEP_TAG: "parent",
            "overrides": " ".join(overrides),
            "sweeper": str(OmegaConf.select(config, "hydra.sweeper._target_")),
            "launcher": str(OmegaConf.select(config, "hydra.launcher._target_")),
            "hydra_overrides": " ".join(_launch_overrides(config)),  # e.g. hydra/launcher=joblib, its n_jobs
            "sweep_dir": str(self.sweep_dir.resolve()),
            "git_commit": store.git_commit(),
        }
        parent = mlflow.start_run(experiment_id=experiment_id, run_name=name, tags=tags)
        self.parent_id = parent.info.run_id
        os.environ[store.PARENT_RUN_ENV] = self.parent_id  # for workers forked or spawned from here from now on
        atexit.register(self._abort)
        params = {f"sweep.{o.split('=', 1)[0].lstrip('+~')}": o.split("=", 1)[-1][:6000] for o in overrides}
        params.update({f"search.{k}": str(v)[:6000] for k, v in search.items()})
        if params:
            mlflow.log_params(params)
        print(f"MLflow sweep run {self.parent_id} ({name}) in {mlflow.get_tracking_uri()}", flush=True)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if self.parent_id is None:
            return
        os.environ[store.PARENT_RUN_ENV] = self.parent_id  # in the job's process, wherever that is
        self._job_started_ms = int(time.time() * 1000)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if self.parent_id is None:  # a single run: nothing to link, and a failure must stay a failure
            return
        num = int(OmegaConf.select(config, "hydra.job.num", default=0))
        record = JobRecord(num, list(job_return.overrides or []), "FINISHED")
        if job_return.status == JobStatus.FAILED:
            error = _job_error(job_return)
            record.status, record.error = "FAILED", f"{type(error).__name__}: {error}"
            # first, so that the sweep goes on even if recording the failure below fails too
            job_return.status, job_return.return_value = JobStatus.COMPLETED, None
            print(f"[sweep] job {num} ({' '.join(record.overrides)}) FAILED: {record.error}", file=sys.stderr)
            print("[sweep] the sweep goes on; the job's run is marked FAILED", file=sys.stderr, flush=True)
        experiment_id = store.connect(tracking_config(config))
        run = self._job_run(experiment_id, record.overrides)
        if run is None and record.status == "FAILED":
            run = self._failed_child(experiment_id, record)
        if run is not None:
            _tag_child(run.info.run_id, record)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.parent_id is None:
            return
        jobs = self._children("FAILED")
        self._finish(jobs, "FINISHED")
        failed = sum(j.status != "FINISHED" for j in jobs)
        if failed and self.exit_code_on_failure:
            print(f"[sweep] {failed} of {len(jobs)} jobs FAILED: see the FAILED runs", file=sys.stderr, flush=True)
            raise SystemExit(self.exit_code_on_failure)  # Hydra swallows Exceptions from callbacks, not SystemExit

    # --- internals ---------------------------------------------------------------------------------------------

    def _job_run(self, experiment_id: str, overrides: list[str]) -> mlflow.entities.Run | None:
        """The run this job started under the parent, if it got that far: a child started since the job began,
        with the job's overrides (pipeline.train tags them), not yet given a job number. Jobs running side by side
        are told apart by their overrides, so this works in any process, on any machine."""
        runs = mlflow.search_runs(
            experiment_ids=[experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{self.parent_id}' "
            f"and attributes.start_time >= {self._job_started_ms}",
            order_by=["attributes.start_time DESC"],
            output_format="list",
        )
        wanted = " ".join(overrides)
        return next((r for r in runs if r.data.tags.get("overrides") == wanted and SWEEP_TAG not in r.data.tags), None)

    def _failed_child(self, experiment_id: str, record: JobRecord) -> mlflow.entities.Run:
        """A FAILED child for a job that failed before its own run started (e.g. a bad config value)."""
        client = mlflow.MlflowClient()
        run = client.create_run(
            experiment_id,
            run_name=f"job{record.num}-failed",
            tags={"mlflow.parentRunId": self.parent_id, "overrides": " ".join(record.overrides)},
        )
        client.set_terminated(run.info.run_id, "FAILED")
        return client.get_run(run.info.run_id)

    def _children(self, dead: str) -> list[JobRecord]:
        """Every job of the sweep, from the store: the parent's children in job-number order. A child still
        RUNNING now belongs to a job whose process is gone (killed worker, lost node): it is closed as `dead`.
        A child with no job number (its job never reached on_job_end) gets the next free one."""
        parent = mlflow.get_run(self.parent_id)
        runs = mlflow.search_runs(
            experiment_ids=[parent.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{self.parent_id}'",
            order_by=["attributes.start_time ASC"],
            output_format="list",
        )
        numbered = [int(r.data.tags[SWEEP_TAG]) for r in runs if r.data.tags.get(SWEEP_TAG, "").isdigit()]
        next_num = max(numbered, default=-1) + 1
        jobs = []
        for run in runs:
            tags = run.data.tags
            record = JobRecord(0, tags.get("overrides", "").split(), run.info.status, run.info.run_id)
            record.run_name, record.error, record.metrics = (
                run.info.run_name,
                tags.get("error", ""),
                store.metrics_of(run),
            )
            if tags.get(SWEEP_TAG, "").isdigit():
                record.num = int(tags[SWEEP_TAG])
            else:
                record.num, next_num = next_num, next_num + 1
                if record.status == "RUNNING":
                    record.status, record.error = dead, "the job's process ended before its run did"
                    mlflow.MlflowClient().set_terminated(run.info.run_id, dead)
                _tag_child(run.info.run_id, record)
            jobs.append(record)
        return sorted(jobs, key=lambda j: j.num)

    def _finish(self, jobs: list[JobRecord], status: str, note: str = "") -> None:
        """Write the summary of `jobs` on the parent run and end it with `status`."""
        files = summary_files(jobs)
        store.log_texts(files)
        if self.sweep_dir is not None and self.sweep_dir.is_dir():
            for name, text in files.items():
                (self.sweep_dir / name).write_text(text, encoding="utf-8")
            for extra in ("multirun.yaml", "optimization_results.yaml"):
                if (self.sweep_dir / extra).is_file():
                    mlflow.log_artifact(str(self.sweep_dir / extra))
        failed = sum(j.status != "FINISHED" for j in jobs)
        best = best_job(jobs)
        mlflow.set_tags({"jobs": len(jobs), "failed_jobs": failed, "best_run_id": best.run_id if best else ""})
        mlflow.set_tag("mlflow.note.content", note + _headline(jobs, best))
        if best:  # not named best_dev_f1: promote.py must never pick the parent, which has no model
            mlflow.log_metrics({f"best_child_{k}": v for k, v in best.metrics.items() if k in METRICS})
        print("\n" + files["sweep_summary.md"], flush=True)
        mlflow.end_run(status=status)
        self.parent_id = None
        os.environ.pop(store.PARENT_RUN_ENV, None)

    def _abort(self) -> None:
        """At exit, if the sweep never reached its end: summarise what ran and close the parent with a note.

        In this process (basic launcher), the job that was running is closed first. The parent ends KILLED when
        a job's run was killed (Ctrl-C, SIGTERM), FAILED otherwise (e.g. the launcher or the sweeper raised).
        """
        if self.parent_id is None:
            return
        active = mlflow.active_run()
        while active is not None and active.info.run_id != self.parent_id:
            mlflow.end_run(status="KILLED")
            active = mlflow.active_run()
        if active is None:  # the parent is no longer this process's active run: reopen it to close it
            mlflow.start_run(run_id=self.parent_id)
        jobs = self._children("KILLED")
        status = "KILLED" if any(j.status == "KILLED" for j in jobs) else "FAILED"
        why = "; ".join(_SWEEP_ERRORS) or ("stopped" if status == "KILLED" else "see the command's error output")
        mlflow.set_tag("sweep_aborted", "true")
        self._finish(jobs, status, note=f"The sweep ended before its last job ({status}): {why[:3000]}. ")


def note_sweep_error(error: BaseException | None) -> None:
    """Keep why the sweep itself died (ner/train.py calls this with the exception Hydra printed), for the note
    on the parent run; a no-op when no sweep is open."""
    if error is not None:
        _SWEEP_ERRORS.append(f"{type(error).__name__}: {error}")


def tracking_config(config: DictConfig) -> store.TrackingConfig:
    """TrackingConfig from a composed config, ignoring keys the dataclass does not (yet) know."""
    names = {f.name for f in dataclasses.fields(store.TrackingConfig)}
    return store.TrackingConfig(**{k: v for k, v in config.tracking.items() if k in names})


def _search_space(config: DictConfig) -> dict[str, Any]:
    """The Optuna sweeper's `hydra.sweeper.params` (the search space), empty for the basic sweeper."""
    params = OmegaConf.select(config, "hydra.sweeper.params")
    if params is None or "optuna" not in str(OmegaConf.select(config, "hydra.sweeper._target_")):
        return {}
    return dict(OmegaConf.to_container(params, resolve=False))


def _launch_overrides(config: DictConfig) -> list[str]:
    """The command line's `hydra...` overrides (launcher, sweeper), which Hydra keeps apart from the task's."""
    return [o for o in config.hydra.overrides.hydra if not o.startswith(("hydra.sweep.dir=", "hydra.mode="))]


def _job_error(job_return: JobReturn) -> BaseException:
    try:
        job_return.return_value  # noqa: B018 - raises the job's exception (and prints its overrides)
    except Exception as error:  # the property re-raises whatever the task raised
        import traceback

        traceback.print_exception(error, file=sys.stderr)
        return error
    return RuntimeError("job failed without an exception")


def _tag_child(run_id: str, record: JobRecord) -> None:
    client = mlflow.MlflowClient()
    client.set_tag(run_id, SWEEP_TAG, str(record.num))
    if record.error:
        client.set_tag(run_id, "error", record.error[:5000])
        client.set_tag(run_id, "mlflow.note.content", f"FAILED: {record.error[:5000]}")


# --- the summary table (also used by pipelines/study.py) -----------------------------------------------------------


def settings(jobs: list[JobRecord]) -> list[str]:
    """Each job's setting: the overrides that differ between jobs, seed excepted (seeds are what we average)."""
    parsed = [dict(o.split("=", 1) for o in j.overrides if "=" in o) for j in jobs]
    keys = list(dict.fromkeys(k for p in parsed for k in p))
    varying = [k for k in keys if k.lstrip("+~") != "seed" and len({p.get(k) for p in parsed}) > 1]
    return [" ".join(f"{k}={p[k]}" for k in varying if k in p) or "all" for p in parsed]


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (nan for fewer than two values: one seed has no spread)."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def fmt(mean: float, std: float) -> str:
    """'91.23 ± 0.45'; the ± part is left out where there is no spread to show."""
    if math.isnan(mean):
        return "–"
    return f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def best_job(jobs: list[JobRecord], metric: str = "best_dev_f1") -> JobRecord | None:
    """The finished job with the highest dev F1: chosen on dev, never on test."""
    done = [j for j in jobs if j.status == "FINISHED" and metric in j.metrics]
    return max(done, key=lambda j: j.metrics[metric], default=None)


def summary_rows(jobs: list[JobRecord]) -> list[dict[str, Any]]:
    """One row per setting: run counts and mean/std of each final metric over its finished runs."""
    groups: dict[str, list[JobRecord]] = {}
    for setting, job in zip(settings(jobs), jobs, strict=True):
        groups.setdefault(setting, []).append(job)
    rows = []
    for setting, group in groups.items():
        done = [j for j in group if j.status == "FINISHED"]
        row: dict[str, Any] = {"setting": setting, "finished": len(done), "failed": len(group) - len(done)}
        for metric in METRICS:
            row[f"{metric}_mean"], row[f"{metric}_std"] = mean_std([j.metrics.get(metric, math.nan) for j in done])
        row["run_ids"] = " ".join(j.run_id or "" for j in group)
        rows.append(row)
    return sorted(rows, key=lambda r: -r["best_dev_f1_mean"] if not math.isnan(r["best_dev_f1_mean"]) else math.inf)


def summary_files(jobs: list[JobRecord]) -> dict[str, str]:
    """sweep_summary.md / .csv (per setting) and sweep_runs.csv (per job), as text."""
    for job, setting in zip(jobs, settings(jobs), strict=True):
        job.setting = setting
    rows = summary_rows(jobs)
    best = best_job(jobs)
    head = "| setting | finished | failed | dev F1 | test F1 | test F1 (strict) |\n|---|---|---|---|---|---|\n"
    body = "".join(
        f"| {r['setting']} | {r['finished']} | {r['failed']} | "
        + " | ".join(fmt(r[f"{m}_mean"], r[f"{m}_std"]) for m in METRICS)
        + " |\n"
        for r in rows
    )
    md = "Mean ± sample std over seeds of each setting's finished runs (F1 in %, seqeval default mode).\n\n"
    md += head + body + "\n" + _headline(jobs, best) + "\n"
    per_job = [
        {
            "job": j.num,
            "setting": j.setting,
            "status": j.status,
            "run_id": j.run_id or "",
            "run_name": j.run_name,
            **{m: j.metrics.get(m, "") for m in METRICS},
            "overrides": " ".join(j.overrides),
            "error": j.error,
        }
        for j in jobs
    ]
    return {"sweep_summary.md": md, "sweep_summary.csv": to_csv(rows), "sweep_runs.csv": to_csv(per_job)}


def to_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return out.getvalue()


def _headline(jobs: list[JobRecord], best: JobRecord | None) -> str:
    failed = sum(j.status != "FINISHED" for j in jobs)
    text = f"{len(jobs)} jobs, {len(jobs) - failed} finished, {failed} failed."
    if best:
        m = best.metrics
        text += (
            f" Best by dev F1: {best.run_name} ({best.setting}), dev F1 {m['best_dev_f1']:.2f},"
            f" test F1 {m.get('test_f1', math.nan):.2f}, run {best.run_id}."
        )
    return text
