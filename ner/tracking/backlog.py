"""Per-epoch metrics that survive a tracking store going away mid-run.

MLflow retries a failed HTTP request for minutes (7 retries with exponential backoff by default): sent blindly,
every epoch's metrics would stall training that long while the server is down. So before sending to an HTTP
store the backlog asks its `/health` with a short timeout, and while the server is down it asks at most every
`retry_every` seconds; the metrics wait in memory and go out, in order, once the server answers again.
"""

from __future__ import annotations

import time

import mlflow

from ner.tracking import store

HEALTH_TIMEOUT_S = 2.0  # how long a reachability check may take before the server counts as down
RETRY_EVERY_S = 30.0  # while the server is down, how often `log` checks whether it is back


class MetricLog:
    """Per-epoch metrics that survive a tracking store going away mid-run: buffered, retried, never fatal."""

    def __init__(self, retry_every: float = RETRY_EVERY_S, timeout: float = HEALTH_TIMEOUT_S) -> None:
        self.pending: list[tuple[dict[str, float], int]] = []
        self.warned = False
        self.retry_every, self.timeout = retry_every, timeout
        self.down_since: float | None = None  # monotonic time of the last failed attempt, None while all is well

    def log(self, values: dict[str, float], step: int) -> None:
        """Queue one epoch's metrics and send the backlog, unless the store was found down moments ago."""
        self.pending.append((values, step))
        if self.down_since is not None and time.monotonic() - self.down_since < self.retry_every:
            return
        self.flush()

    def flush(self) -> None:
        """Send every pending epoch, oldest first; on failure keep the rest and say so once."""
        try:
            if self.pending:
                store.check_reachable(mlflow.get_tracking_uri(), timeout=self.timeout)  # seconds, not minutes
            while self.pending:
                values, step = self.pending[0]
                mlflow.log_metrics(values, step=step)
                self.pending.pop(0)
            self.down_since = None
        except Exception as err:  # noqa: BLE001 - any store failure must not stop training
            self.down_since = time.monotonic()
            if not self.warned:
                print(f"warning: tracking store unavailable ({err}); metrics are kept and retried", flush=True)
                self.warned = True
