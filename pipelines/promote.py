"""Promote the best run of an experiment, by dev F1, to a registry alias (default `champion`).

    python -m pipelines.promote --experiment ner --model ner-conll03 [--alias champion] [--tracking-uri URI]

Then `models:/ner-conll03@champion` names that model everywhere: `python -m ner.tag model=models:/...@champion`,
`mlflow models serve -m models:/ner-conll03@champion --env-manager local`, `mlflow.pyfunc.load_model(...)`.

The choice is `ner.tracking.model_uri.best_run`, the same as `model=best:<experiment>`: dev F1 (`best_dev_f1`), never
test F1, and only FINISHED runs that logged a model, so a sweep's parent run (no model) or a failed run can never
be promoted. If the best run's model is not yet registered under the name, it is
registered now (`runs:/<run_id>/model`); if it is, its existing version is reused. Aliases replace the deprecated
registry stages.
"""

from __future__ import annotations

import argparse
import sys

import mlflow
from mlflow.entities.model_registry import ModelVersion

from ner.tracking import model_uri, store


def registered_version(client: mlflow.MlflowClient, name: str, run_id: str) -> ModelVersion:
    """The run's model as a version of `name`: the existing one if it was registered already, else a new one."""
    existing = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if existing:
        return max(existing, key=lambda v: int(v.version))
    # the logged model itself: `runs:/<id>/model` makes MLflow 3 warn that the run has no artifact path `model`
    experiment = client.get_run(run_id).info.experiment_id
    found = mlflow.search_logged_models([experiment], filter_string=f"source_run_id = '{run_id}'", output_format="list")
    model = found[0]
    return mlflow.register_model(f"models:/{model.model_id}", name)


def promote(
    experiment: str,
    model_name: str,
    alias: str = "champion",
    tracking_uri: str | None = None,
    metric: str = "best_dev_f1",
) -> ModelVersion:
    """Point `models:/<model_name>@<alias>` at the best run of `experiment`; returns the model version."""
    mlflow.set_tracking_uri(store.store_uri(tracking_uri))
    client = mlflow.MlflowClient()
    try:
        run = model_uri.best_run(experiment, (store.logged_name(metric), metric))  # new runs' name, then old ones'
    except model_uri.ModelError as err:
        raise SystemExit(str(err)) from None
    version = registered_version(client, model_name, run.info.run_id)
    client.set_registered_model_alias(model_name, alias, version.version)
    score = store.metrics_of(run)[metric]
    client.set_model_version_tag(model_name, version.version, metric, f"{score:.4f}")
    client.set_model_version_tag(model_name, version.version, "experiment", experiment)
    test = store.metrics_of(run).get("test_f1")
    print(
        f"models:/{model_name}@{alias} -> version {version.version}: run {run.info.run_name} ({run.info.run_id}),"
        f" {metric} {score:.2f}" + (f", test F1 {test:.2f}" if test is not None else ""),
        flush=True,
    )
    return client.get_model_version(model_name, version.version)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="ner", help="MLflow experiment to choose from (default: ner)")
    parser.add_argument("--model", required=True, help="registered model name, e.g. ner-conll03")
    parser.add_argument("--alias", default="champion", help="alias to point at the best run (default: champion)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default: the project's ./mlruns)")
    parser.add_argument("--metric", default="best_dev_f1", help="metric to maximise (default: best_dev_f1)")
    args = parser.parse_args(argv)
    promote(args.experiment, args.model, args.alias, args.tracking_uri, args.metric)
    return 0


if __name__ == "__main__":
    sys.exit(main())
