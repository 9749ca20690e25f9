"""`python -m ner.train [overrides]`: compose the config, train, evaluate, and track everything in MLflow.

The work is `ner.training.pipeline.train(cfg)`; this entry point only adds what a command needs: signals,
exit codes, and one-line errors instead of tracebacks.

Launchers that run jobs in other processes (hydra/launcher=joblib, ray, submitit) pickle `main` with cloudpickle.
Run as `python -m ner.train`, this module is `__main__`, so `main` is pickled by value together with every global
it names: those must be modules, classes and functions (pickled by reference), never objects holding a lock or
a file. That is why `main` says `pipeline.STOP` rather than importing the Event itself (tests/test_launchers.py).
"""

from __future__ import annotations

import signal
import sys
import threading

import hydra
from omegaconf import DictConfig, OmegaConf

from ner.config import ConfigError, help_text, quiet_mlflow
from ner.data.conll import DataError
from ner.tracking.store import TrackingError
from ner.training import pipeline, sweep
from ner.training.trainer import Stop

OmegaConf.register_new_resolver("ner_help", help_text, replace=True)  # conf's hydra.help.template


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    quiet_mlflow()
    pipeline.STOP.clear()
    if threading.current_thread() is threading.main_thread():  # a launcher may run the job in a worker thread
        signal.signal(signal.SIGTERM, pipeline.request_stop)
        signal.signal(signal.SIGINT, pipeline.request_stop)
    try:
        return pipeline.train(cfg).get("best_dev_f1", float("nan"))  # what sweepers optimise (none: train + dev)
    except (ConfigError, DataError, TrackingError, FloatingPointError) as err:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # let the sweep record this job as failed and go on
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except Stop as err:  # a requested stop is not a crash: no traceback, the usual exit status of a SIGINT
        print(f"{err} (the run is marked KILLED; its checkpoint is kept)", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:  # a second signal: stopped at once, mid-batch
        print("stopped at once (the run is marked KILLED; its last checkpoint is kept)", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    try:
        main()
    except SystemExit as exit_:  # Hydra prints a dead sweep's error, then exits 1 from inside its `except`
        sweep.note_sweep_error(exit_.__context__)  # so the sweep's parent run can say why it ended FAILED
        raise
