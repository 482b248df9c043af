"""One MLflow run fed from a background thread, so that a slow or absent tracking server
never holds up the job that writes it.

The job's thread only appends to a bounded buffer (a lock and a deque: microseconds). The
sender's thread imports mlflow, creates (or opens) the run and sends what is buffered:
metrics, params and tags in batches, then files and the run's end in order. A failed
request is retried after 0.5, 1 and 2 s; then tracking gives up for this run, drops what
it holds and the job's log says so once (`report`). `finish` waits at most
`FLUSH_SECONDS` for the buffer to go out.

MLflow's HTTP client is given a short timeout and no retries of its own
(`MLFLOW_HTTP_REQUEST_TIMEOUT`, `MLFLOW_HTTP_REQUEST_MAX_RETRIES`), unless the environment
sets them: MLflow reads them at every request, so a value set there wins. MLflow's links
to a run are never printed (`MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT`): a job's stdout may
be its outcome.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sdod.tracking import NullRun, experiment_name, tracking_uri

HTTP_TIMEOUT_SECONDS = 5
RETRY_DELAYS = (0.5, 1.0, 2.0)  # seconds between the tries of one request; then give up
FLUSH_SECONDS = 30.0  # the longest `finish` waits for the buffer to go out
MAX_BUFFER = 10_000  # records held while the server does not answer (then the oldest go)
BATCH = {"metric": 1000, "param": 100, "tag": 100}  # MLflow's per-request limits
MAX_TAG_CHARS = 5000  # MLflow keeps tag values up to 8000 characters
RECORDS = ("metric", "param", "tag")


def short_http() -> None:
    """MLflow's HTTP client with a short timeout and no retries of its own (the sender
    retries), unless the environment says otherwise; and no links printed to stdout when a
    run ends (`sdod train --json` writes its outcome there)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(HTTP_TIMEOUT_SECONDS))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"


def experiment_id(client: Any) -> str:
    """The id of `MLFLOW_EXPERIMENT_NAME` (default `sdod`), created on first use."""
    name = experiment_name()
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name))
    except Exception:  # another job created it first
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


@dataclass(frozen=True)
class RunTarget:
    """The run to write: `run_id` when it exists already, else a new run named `name` in the
    experiment, with `tags`, nested under the run `parent` when given."""

    name: str
    run_id: str | None = None
    parent: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


class Sender(NullRun):
    """An MLflow run written from a background thread (see the module's docstring); `start`
    starts the thread, `finish` ends the run."""

    on = True

    def __init__(self, target: RunTarget, log: Callable[[str], None]) -> None:
        self.target, self._log = target, log
        self.run_id = target.run_id
        self.failure: str | None = None
        self.dropped = 0
        self._items: deque[tuple[Any, ...]] = deque()
        self._cond = threading.Condition()
        self._closing = self._reported = False
        self._thread = threading.Thread(target=self._loop, name="sdod-mlflow", daemon=True)

    def start(self) -> Sender:
        short_http()
        self._thread.start()
        return self

    def metric(self, name: str, value: float, step: int) -> None:
        self._put(("metric", name, float(value), int(step), int(time.time() * 1000)))

    def params(self, values: Mapping[str, Any]) -> None:
        for key, value in values.items():
            self._put(("param", key, str(value)))

    def tags(self, values: Mapping[str, Any]) -> None:
        for key, value in values.items():
            self._put(("tag", key, str(value)[:MAX_TAG_CHARS]))

    def deferred_tags(self, read: Callable[[], Mapping[str, Any]]) -> None:
        """Tags that `read` finds on the sender's thread (it may do I/O); a `read` that
        raises adds none and is no tracking failure."""
        self._put(("read", read))

    def artifact(self, path: str, folder: str | None = None) -> None:
        self._put(("file", str(path), folder))

    def report(self) -> None:
        if self.failure is not None and not self._reported:
            self._reported = True
            self._log(
                f"MLflow tracking at {tracking_uri()} failed; the job goes on without it "
                f"(run {self.run_id or 'not created'}): {self.failure}"
            )

    def finish(self, status: str) -> None:
        self._put(("end", status))
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(FLUSH_SECONDS)
        if self._thread.is_alive() and self.failure is None:
            self.failure = f"the server took no records for {FLUSH_SECONDS:g} s"
        self.report()

    def _put(self, item: tuple[Any, ...]) -> None:
        with self._cond:
            if self.failure is not None or self._closing:
                return
            if len(self._items) >= MAX_BUFFER:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify()

    def _next(self) -> list[tuple[Any, ...]] | None:
        """The next request's items: a run of records (up to `BATCH`), or one file, read
        or end; None when closing with nothing left."""
        with self._cond:
            while not self._items:
                if self._closing:
                    return None
                self._cond.wait(1.0)
            batch = [self._items.popleft()]
            if batch[0][0] in RECORDS:
                while self._items and self._items[0][0] in RECORDS and len(batch) < 1000:
                    batch.append(self._items.popleft())
            return batch

    def _loop(self) -> None:
        tries = 0
        try:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri())
        except Exception as exc:
            self._give_up(exc)
            return
        while (batch := self._next()) is not None:
            try:
                self._send(client, batch)
                tries = 0
            except Exception as exc:
                if tries >= len(RETRY_DELAYS) or self._closing:
                    self._give_up(exc)
                    return
                with self._cond:
                    self._items.extendleft(reversed(batch))
                    self._cond.wait(RETRY_DELAYS[tries])  # `finish` cuts the wait short
                tries += 1

    def _give_up(self, exc: Exception) -> None:
        with self._cond:
            held = len(self._items)
            self._items.clear()
            lost = f"; {held} record(s) not sent" if held else ""
            dropped = f", {self.dropped} dropped earlier" if self.dropped else ""
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            self.failure = f"{type(exc).__name__}: {first[:300]}{lost}{dropped}"

    def _send(self, client: Any, batch: list[tuple[Any, ...]]) -> None:
        if self.run_id is None:
            tags = dict(self.target.tags)
            if self.target.parent:
                tags["mlflow.parentRunId"] = self.target.parent
            run = client.create_run(experiment_id(client), run_name=self.target.name, tags=tags)
            self.run_id = run.info.run_id
        kind = batch[0][0]
        if kind == "file":
            _, path, folder = batch[0]
            upload = client.log_artifacts if os.path.isdir(path) else client.log_artifact
            upload(self.run_id, path, folder)
        elif kind == "end":
            client.set_terminated(self.run_id, batch[0][1])
        elif kind == "read":
            self._read_tags(batch[0][1])
        else:
            _send_records(client, self.run_id, batch)

    def _read_tags(self, read: Callable[[], Mapping[str, Any]]) -> None:
        try:
            found = read()
        except Exception:
            return
        with self._cond:  # sent next, ahead of what came after the read
            self._items.extendleft(("tag", k, str(v)[:MAX_TAG_CHARS]) for k, v in found.items())


def _send_records(client: Any, run_id: str, batch: list[tuple[Any, ...]]) -> None:
    from mlflow.entities import Metric, Param, RunTag

    metrics = [Metric(k, v, ts, step) for kind, k, v, step, ts in _of(batch, "metric")]
    params = [Param(k, v) for _, k, v in _of(batch, "param")]
    tags = [RunTag(k, v) for _, k, v in _of(batch, "tag")]
    for i in range(0, len(metrics), BATCH["metric"]):
        client.log_batch(run_id, metrics=metrics[i : i + BATCH["metric"]])
    for i in range(0, len(params), BATCH["param"]):
        client.log_batch(run_id, params=params[i : i + BATCH["param"]])
    for i in range(0, len(tags), BATCH["tag"]):
        client.log_batch(run_id, tags=tags[i : i + BATCH["tag"]])


def _of(batch: list[tuple[Any, ...]], kind: str) -> list[tuple[Any, ...]]:
    return [item for item in batch if item[0] == kind]


def open_run(target: RunTarget, log: Callable[[str], None]) -> NullRun:
    """The run `target` names, written from a background thread; a `NullRun` when tracking
    is off."""
    if tracking_uri() is None:
        return NullRun()
    return Sender(target, log).start()


def bounded(call: Callable[[], Any], seconds: float) -> Any:
    """`call()` on a daemon thread, waited for at most `seconds` (TimeoutError after): for
    the few direct requests of a tuning job's run and the registry mirror."""
    short_http()
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = call()
        except Exception as exc:
            out["error"] = exc

    thread = threading.Thread(target=run, name="sdod-mlflow-call", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"no answer from the MLflow server within {seconds:g} s")
    if "error" in out:
        raise out["error"]
    return out.get("value")
