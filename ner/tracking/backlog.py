"""Per-epoch metrics that survive a tracking store going away mid-run."""

from __future__ import annotations

import mlflow


class MetricLog:
    """Per-epoch metrics that survive a tracking store going away mid-run: buffered, retried, never fatal."""

    def __init__(self) -> None:
        self.pending: list[tuple[dict[str, float], int]] = []
        self.warned = False

    def log(self, values: dict[str, float], step: int) -> None:
        self.pending.append((values, step))
        self.flush()

    def flush(self) -> None:
        try:
            while self.pending:
                values, step = self.pending[0]
                mlflow.log_metrics(values, step=step)
                self.pending.pop(0)
        except Exception as err:  # noqa: BLE001 - any store failure must not stop training
            if not self.warned:
                print(f"warning: tracking store unavailable ({err}); metrics are kept and retried", flush=True)
                self.warned = True
