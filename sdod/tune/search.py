"""A tuning job: an Optuna study whose trials are sdod training jobs.

| SageMaker | Optuna |
| --- | --- |
| Strategy Bayesian | TPE sampler (`RandomSeed` seeds it) |
| Strategy Random | random sampler |
| Strategy Grid | every combination of the categorical values, in the order listed |
| Strategy Hyperband | random sampler + Hyperband pruner over epochs (`HyperbandStrategyConfig`) |
| TrainingJobEarlyStoppingType Auto | median pruner fed each trial's per-epoch `validation:mAP` |
| WarmStartConfig | the parents' finished trials are added to the study before it starts |

The study lives in a database (`SDOD_TUNING_STORAGE`, an SQLAlchemy URL: the cluster's
PostgreSQL; default SQLite under the state folder), so trials on several workers share
it and a restarted tuning job goes on where it stopped. Each trial is a training job named
`<tuning-job>-<NNN>-<hash>`, run by `python -m sdod train` in its own process: the trial
reads its metric lines as they come, and a pruned trial gets SIGTERM, so it ends Stopped
with a valid model, as SageMaker's early stopping does.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdod.errors import UserError
from sdod.train.metrics import MetricPoint
from sdod.tune.spec import OBJECTIVE, ParameterRange, TuningSpec
from sdod.tune.trials import TrialProcess, TrialRecord, iso_time, trial_name

if TYPE_CHECKING:
    import optuna


def _storage(url: str) -> optuna.storages.BaseStorage:
    import optuna

    kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except Exception as exc:  # a wrong URL, a database that is down
        raise UserError(f"tuning storage {url!r} cannot be opened ({exc})") from None


def _distribution(r: ParameterRange) -> optuna.distributions.BaseDistribution:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if r.kind == "categorical":
        return CategoricalDistribution(list(r.values))
    if r.kind == "integer":
        return IntDistribution(int(r.low), int(r.high), log=r.log)
    if r.scaling == "ReverseLogarithmic":  # searched as 1 - x, x log-uniform
        return FloatDistribution(1 - r.high, 1 - r.low, log=True)
    return FloatDistribution(r.low, r.high, log=r.log)


def _value(r: ParameterRange, internal: Any) -> str:
    if r.kind == "categorical":
        return str(internal)
    if r.kind == "integer":
        return str(int(internal))
    value = 1 - float(internal) if r.scaling == "ReverseLogarithmic" else float(internal)
    return f"{value:.6g}"


class TuningRun:
    """The search loop: lanes ask the shared study for hyperparameters, run the trial, tell.

    Everything the loop decides on is in the study (so lanes in several processes or on
    several workers, e.g. the `sdod_tune` DAG's mapped tasks, share it): a trial's own
    number comes from the storage's atomic trial numbering (less the warm-start trials);
    what each trial did is kept in its user attributes; the start time in the study's."""

    def __init__(
        self,
        spec: TuningSpec,
        *,
        work: Path,
        storage: str,
        log: Callable[[str], None],
        parallel: int = 1,
        env: dict[str, str] | None = None,
    ) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.spec, self.work, self.log, self.env = spec, work, log, env or {}
        self.parallel = max(1, min(parallel, spec.max_parallel))
        self.storage = _storage(storage)
        self.distributions = {r.name: _distribution(r) for r in spec.ranges}
        self.study = optuna.create_study(
            study_name=spec.name,
            storage=self.storage,
            direction="maximize",
            sampler=self._sampler(),
            pruner=self._pruner(),
            load_if_exists=True,
        )
        if "started" not in self.study.user_attrs:
            self.study.set_user_attr("started", time.time())
        self.started = float(self.study.user_attrs["started"])
        self.lock = threading.Lock()
        self.stop_reason = ""
        self.running: set[TrialProcess] = set()
        self.grid = spec.grid() if spec.strategy == "Grid" else []  # what prepare() enqueues
        self.total = min(spec.max_jobs, len(self.grid)) if self.grid else spec.max_jobs

    def _sampler(self) -> optuna.samplers.BaseSampler:
        import optuna

        seed = self.spec.seed
        if self.spec.strategy == "Bayesian":
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=3)
        return optuna.samplers.RandomSampler(seed=seed)

    def _pruner(self) -> optuna.pruners.BasePruner:
        import optuna

        if self.spec.hyperband is not None:
            low, high = self.spec.hyperband
            return optuna.pruners.HyperbandPruner(min_resource=low, max_resource=high)
        if self.spec.early_stopping == "Auto":  # SageMaker's median rule
            return optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=1)
        return optuna.pruners.NopPruner()

    # --- warm start ----------------------------------------------------------------------

    def warm_start(self) -> int:
        """Add the parents' finished trials (once per study); how many were added."""
        import optuna
        from optuna.trial import TrialState, create_trial

        if self.study.user_attrs.get("warm_started") or not self.spec.parents:
            return 0
        added = 0
        for parent in self.spec.parents:
            try:
                theirs = optuna.load_study(study_name=parent, storage=self.storage)
            except KeyError:
                raise UserError(
                    f"WarmStartConfig: parent tuning job {parent!r} is not in the tuning "
                    "storage; run it first, or point SDOD_TUNING_STORAGE at its database"
                ) from None
            for t in theirs.get_trials(deepcopy=False):
                objective = t.user_attrs.get("objective")
                if t.state not in (TrialState.COMPLETE, TrialState.PRUNED) or objective is None:
                    continue
                if set(t.params) != set(self.distributions):
                    continue
                try:
                    self.study.add_trial(create_trial(
                        params=t.params, distributions=self.distributions, value=objective,
                        intermediate_values=t.intermediate_values,
                        user_attrs={**t.user_attrs, "warm_start_parent": parent},
                    ))  # fmt: skip
                except ValueError:  # outside this job's ranges: not a usable observation
                    continue
                added += 1
        self.study.set_user_attr("warm_started", True)
        self.study.set_user_attr("warm_start_trials", added)
        if added:
            self.log(f"warm start: {added} finished trial(s) of {', '.join(self.spec.parents)}")
        return added

    # --- the records, from the study -----------------------------------------------------

    def records(self) -> list[TrialRecord]:
        """This tuning job's trials (not the warm-start ones), in number order."""
        out = [
            TrialRecord.from_attrs(t.user_attrs)
            for t in self.study.get_trials(deepcopy=False)
            if "TrainingJobName" in t.user_attrs
            and not t.user_attrs.get("warm_start_parent")
            and not t.user_attrs.get("skipped")
        ]
        return sorted(out, key=lambda r: r.number)

    def best(self, records: list[TrialRecord] | None = None) -> TrialRecord | None:
        records = self.records() if records is None else records
        scored = [r for r in records if r.objective is not None]
        return max(scored, key=lambda r: r.objective or 0.0) if scored else None

    # --- the loop ------------------------------------------------------------------------

    def _done_reason(self, own: int, records: list[TrialRecord]) -> str:
        """Why no trial numbered `own` may start ("" when it may), from the study alone:
        the same answer in every lane and in a later summary task."""
        spec = self.spec
        best = self.best(records)
        if spec.target is not None and best is not None and (best.objective or 0.0) >= spec.target:
            return f"TargetObjectiveMetricValue {spec.target} reached"
        if own > self.total:
            return "MaxNumberOfTrainingJobs reached"
        if spec.max_runtime_seconds and time.time() - self.started >= spec.max_runtime_seconds:
            return "MaxRuntimeInSeconds reached"
        return ""

    def _should_stop(self, own: int) -> bool:
        """`own`: the number the next trial would get."""
        if not self.stop_reason:
            self.stop_reason = self._done_reason(own, self.records())
        return bool(self.stop_reason)

    def _next(self, lane: int) -> tuple[optuna.trial.Trial, TrialRecord] | None:
        from optuna.trial import TrialState

        with self.lock:
            warm = int(self.study.user_attrs.get("warm_start_trials", 0))
            trials = self.study.get_trials(deepcopy=False)
            begun = sum(t.state != TrialState.WAITING for t in trials) - warm
            if self._should_stop(begun + 1):
                return None
            trial = self.study.ask(self.distributions)  # Grid: the next enqueued combination
            number = trial.number - warm + 1  # the storage numbers trials atomically
            if number > self.total:
                trial.set_user_attr("skipped", True)  # another lane took the last one
                self.study.tell(trial, state=TrialState.FAIL)
                self.stop_reason = self.stop_reason or "MaxNumberOfTrainingJobs reached"
                return None
            ranges = {r.name: r for r in self.spec.ranges}
            tuned = {k: _value(ranges[k], v) for k, v in trial.params.items()}
            record = TrialRecord(trial_name(self.spec.name, number, tuned), number, tuned)
            record.started = time.time()
            self._save(trial, record)
            trial.set_user_attr("lane", lane)
            return trial, record

    def _fail_orphans(self, lane: int) -> int:
        """A lane that starts again (its task retried on another worker) finds the trial it
        was running still RUNNING in the study: its worker was lost. That trial failed."""
        from optuna.trial import TrialState

        orphans = [
            t for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if t.user_attrs.get("lane") == lane and "TrainingJobName" in t.user_attrs
        ]  # fmt: skip
        for t in orphans:
            attrs = t.user_attrs
            storage, tid = self.study._storage, t._trial_id
            for key, value in (
                ("status", "Failed"), ("ended", time.time()),
                ("failure", "the worker running this trial was lost; its lane restarted"),
            ):  # fmt: skip
                storage.set_trial_user_attr(tid, key, value)
            storage.set_trial_state_values(tid, state=TrialState.FAIL)
            self.log(f"{attrs['TrainingJobName']}: Failed (its worker was lost)")
        return len(orphans)

    def prepare(self) -> None:
        """Once per tuning job, before any trial: the warm start, then (Grid) every
        combination enqueued in the order listed, so trial N runs the N-th."""
        self.warm_start()
        if self.grid and not self.study.user_attrs.get("grid_enqueued"):
            for params in self.grid:
                self.study.enqueue_trial(params, skip_if_exists=False)
            self.study.set_user_attr("grid_enqueued", True)

    def _save(self, trial: optuna.trial.Trial, record: TrialRecord) -> None:
        for key, value in record.to_attrs().items():
            trial.set_user_attr(key, value)

    def _run(self, trial: optuna.trial.Trial, record: TrialRecord) -> None:
        request = self.spec.trial_request(record.name, record.hyperparameters)
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        pruned = False

        def report(point: MetricPoint) -> None:  # each metric line, as it is written
            nonlocal pruned
            if point.name != OBJECTIVE or point.epoch is None:
                return
            record.history.append(point.value)
            trial.report(point.value, point.epoch)
            if not pruned and trial.should_prune():
                pruned = True
                epoch, value = point.epoch, point.value
                self.log(f"{record.name}: early stopping after epoch {epoch} (mAP {value:.3f})")
                process.stop()

        process = TrialProcess(request, self.work / record.name, env, on_metric=report)
        process.start()
        with self.lock:
            self.running.add(process)
        outcome = process.wait()
        with self.lock:
            self.running.discard(process)
            self._finish(trial, record, outcome, pruned)

    def _finish(
        self, trial: optuna.trial.Trial, record: TrialRecord, outcome: dict, pruned: bool
    ) -> None:
        from optuna.trial import TrialState

        record.ended = time.time()
        record.status = str(outcome.get("status", "Failed"))
        metrics = outcome.get("metrics") or {}
        record.model = outcome.get("model_uri") or outcome.get("artifact")
        if record.status in ("Completed", "Stopped") and metrics.get(OBJECTIVE) is not None:
            record.objective = float(metrics[OBJECTIVE])
            record.early_stopped = pruned
            state = TrialState.PRUNED if pruned else TrialState.COMPLETE
        else:
            record.status = "Failed"
            record.failure = str(outcome.get("message") or "no objective metric")[:500]
            state = TrialState.FAIL
        self._save(trial, record)
        value = record.objective if state == TrialState.COMPLETE else None
        self.study.tell(trial, value, state=state)
        self.log(self._progress(record))

    def _progress(self, r: TrialRecord) -> str:
        records = self.records()
        done = sum(1 for x in records if x.status != "InProgress")
        best = self.best(records)
        value = f"{r.objective:.4f}" if r.objective is not None else "-"
        tuned = ", ".join(f"{k}={v}" for k, v in r.hyperparameters.items())
        return (
            f"trial {done}/{self.total} {r.name} {r.status}"
            f"{' (early stopped)' if r.early_stopped else ''}: {OBJECTIVE}={value} [{tuned}]; "
            "best so far "
            + (f"{best.name} {best.objective:.4f}" if best and best.objective is not None else "-")
        )

    def lane(self, lane: int = 0) -> int:
        """Run trials one after another until the tuning job is done; how many ran."""
        self._fail_orphans(lane)
        ran = 0
        while (nxt := self._next(lane)) is not None:
            self._run(*nxt)
            ran += 1
        return ran

    def run_lanes(self, lanes: list[int]) -> None:
        """These lanes in this process (threads); at MaxRuntimeInSeconds the running
        trials get SIGTERM, as SageMaker stops them."""
        threads = [threading.Thread(target=self.lane, args=(i,), daemon=True) for i in lanes]
        for t in threads:
            t.start()
        deadline = self.spec.max_runtime_seconds
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(timeout=1.0)
            if deadline and time.time() - self.started >= deadline:
                with self.lock:
                    self.stop_reason = self.stop_reason or "MaxRuntimeInSeconds reached"
                    for process in self.running:
                        process.stop()

    def run(self) -> dict[str, Any]:
        """`parallel` lanes in this process, then the summary."""
        self.prepare()
        self.run_lanes(list(range(self.parallel)))
        return self.describe()

    def describe(self) -> dict[str, Any]:
        """DescribeHyperParameterTuningJob's shape, with every trial's summary."""
        records = self.records()
        kinds = ("Completed", "InProgress", "RetryableError", "NonRetryableError", "Stopped")
        counts = dict.fromkeys(kinds, 0)
        for r in records:
            counts["NonRetryableError" if r.status == "Failed" else r.status] += 1
        objective = {
            "Succeeded": sum(r.objective is not None for r in records),
            "Pending": sum(r.status == "InProgress" for r in records),
            "Failed": sum(r.status == "Failed" for r in records),
        }
        best = self.best(records)
        reason = (
            self.stop_reason
            or self._done_reason(len(records) + 1, records)
            or "MaxRuntimeInSeconds reached"  # the running trials were stopped
        )
        out: dict[str, Any] = {
            "HyperParameterTuningJobName": self.spec.name,
            "HyperParameterTuningJobStatus": "Completed" if best is not None else "Failed",
            "HyperParameterTuningJobConfig": self.spec.raw.get("HyperParameterTuningJobConfig"),
            "TrainingJobDefinition": self.spec.training,
            "CreationTime": iso_time(self.started),
            "HyperParameterTuningEndTime": iso_time(time.time()),
            "TrainingJobStatusCounters": counts,
            "ObjectiveStatusCounters": objective,
            "TuningJobCompletionDetails": {"Reason": reason},
            "TrainingJobSummaries": [r.summary() for r in records],
        }
        if best is not None:
            out["BestTrainingJob"] = best.summary()
        if self.spec.parents:
            out["WarmStartConfig"] = self.spec.raw.get("WarmStartConfig")
        return out
