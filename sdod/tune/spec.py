"""CreateHyperParameterTuningJob requests: parsed and checked as SageMaker checks them.

Every problem is collected (`check_tuning_request`) so a user fixes them in one go; each
names its field. Ranges are checked against the hyperparameters' own valid ranges
(`sdod.hyperparameters.PARSERS`), so a range SageMaker would refuse is refused here too;
the trials' CreateTrainingJob request (`TrainingJobDefinition` + one value per range) is
checked like any training job before anything runs.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from typing import Any

from sdod.errors import UserError

OBJECTIVE = "validation:mAP"
STRATEGIES = ("Bayesian", "Random", "Grid", "Hyperband")
SCALINGS = ("Auto", "Linear", "Logarithmic", "ReverseLogarithmic")
EARLY_STOPPING = ("Off", "Auto")
WARM_START_TYPES = ("IdenticalDataAndAlgorithm", "TransferLearning")
NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,31}")
KINDS = {
    "IntegerParameterRanges": "integer",
    "ContinuousParameterRanges": "continuous",
    "CategoricalParameterRanges": "categorical",
}
# SageMaker's documented tunable hyperparameters of the Object Detection algorithm, and
# their kinds; the rest of the table is static
TUNABLE = {
    "learning_rate": "continuous",
    "mini_batch_size": "integer",
    "momentum": "continuous",
    "optimizer": "categorical",
    "weight_decay": "continuous",
}
MAX_JOBS, MAX_PARALLEL = 750, 100  # SageMaker's service limits


@dataclass(frozen=True)
class ParameterRange:
    name: str
    kind: str  # integer | continuous | categorical
    low: float = 0.0
    high: float = 0.0
    values: tuple[str, ...] = ()
    scaling: str = "Auto"

    @property
    def log(self) -> bool:
        """Logarithmic search: asked for, or `Auto` over a range spanning decades."""
        if self.scaling == "Logarithmic":
            return True
        return self.scaling == "Auto" and self.low > 0 and self.high / self.low >= 100

    def example(self) -> str:
        """One value of the range, as a hyperparameter string: the first category, else
        the middle (geometric on a log scale)."""
        if self.values:
            return self.values[0]
        value = math.sqrt(self.low * self.high) if self.log else (self.low + self.high) / 2
        return str(round(value)) if self.kind == "integer" else repr(value)

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "categorical":
            return {"Name": self.name, "Values": list(self.values)}
        fmt = (lambda v: str(int(v))) if self.kind == "integer" else repr
        return {
            "Name": self.name,
            "MinValue": fmt(self.low),
            "MaxValue": fmt(self.high),
            "ScalingType": self.scaling,
        }


@dataclass(frozen=True)
class TuningSpec:
    name: str
    strategy: str
    ranges: tuple[ParameterRange, ...]
    max_jobs: int
    max_parallel: int
    max_runtime_seconds: int | None
    early_stopping: str
    target: float | None
    seed: int | None
    training: dict[str, Any]  # TrainingJobDefinition, as sent
    static: dict[str, str]
    parents: tuple[str, ...] = ()
    warm_start_type: str = ""
    hyperband: tuple[int, int] | None = None  # MinResource, MaxResource (epochs)
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    def grid(self) -> list[dict[str, str]]:
        """Every combination of the categorical values, in the order listed (Grid)."""
        names = [r.name for r in self.ranges]
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(
            *(r.values for r in self.ranges)
        )]  # fmt: skip

    def example_request(self) -> dict[str, Any]:
        """A CreateTrainingJob request with one value of every range: what validation and
        the DAG's data preparation (named after the tuning job) work from."""
        return self.trial_request(self.name, {r.name: r.example() for r in self.ranges})

    def trial_request(self, job_name: str, tuned: dict[str, str]) -> dict[str, Any]:
        """The CreateTrainingJob request of one trial."""
        request = {k: v for k, v in self.training.items() if k != "StaticHyperParameters"}
        request["TrainingJobName"] = job_name
        request["HyperParameters"] = {**self.static, **tuned}
        checkpoint = request.get("CheckpointConfig")
        if isinstance(checkpoint, dict) and checkpoint.get("S3Uri"):  # one folder per trial:
            from sdod.storage import join_uri  # a trial must never resume another's

            request["CheckpointConfig"] = {
                **checkpoint, "S3Uri": join_uri(checkpoint["S3Uri"], job_name) + "/"
            }  # fmt: skip
        return request


def _number(raw: Any, where: str, problems: list[str], integer: bool) -> float | None:
    try:
        value = float(str(raw).strip())
    except ValueError:
        problems.append(f"{where}: {raw!r} is not a number")
        return None
    if not math.isfinite(value) or (integer and value != int(value)):
        problems.append(f"{where}: {raw!r} is not {'an integer' if integer else 'finite'}")
        return None
    return value


def _valid(name: str, value: str) -> str | None:
    """The hyperparameter's own rule broken by `value`, or None."""
    from sdod.hyperparameters import PARSERS

    try:
        PARSERS[name](name, value)
    except UserError as exc:
        return str(exc)
    return None


def _range(kind: str, raw: Any, where: str, problems: list[str]) -> ParameterRange | None:
    name = _tunable_name(kind, raw, where, problems)
    if name is None:
        return None
    if kind == "categorical":
        return _categorical(name, raw.get("Values"), where, problems)
    return _numeric(name, kind, raw, where, problems)


def _tunable_name(kind: str, raw: Any, where: str, problems: list[str]) -> str | None:
    """The range's hyperparameter when it is tunable with ranges of `kind`, else None (and
    the problem noted)."""
    from sdod.hyperparameters import PARSERS

    if not isinstance(raw, dict) or not isinstance(raw.get("Name"), str):
        problems.append(f"{where}: each range is an object with a Name")
        return None
    name: str = raw["Name"]
    if name not in TUNABLE:
        what = "a tunable" if name in PARSERS else "a"
        problems.append(
            f"{where}.Name: {name!r} is not {what} hyperparameter of the algorithm; tunable: "
            f"{', '.join(TUNABLE)} (set the others in StaticHyperParameters)"
        )
        return None
    if kind != "categorical" and TUNABLE[name] != kind:
        problems.append(f"{where}: {name} takes {TUNABLE[name]} or categorical ranges, not {kind}")
        return None
    return name


def _numeric(
    name: str, kind: str, raw: dict[str, Any], where: str, problems: list[str]
) -> ParameterRange | None:
    """An integer or continuous range: its bounds within the hyperparameter's own, and a
    scaling they allow."""
    integer = kind == "integer"
    low = _number(raw.get("MinValue"), f"{where}.MinValue", problems, integer)
    high = _number(raw.get("MaxValue"), f"{where}.MaxValue", problems, integer)
    scaling = raw.get("ScalingType", "Auto")
    if scaling not in SCALINGS:
        problems.append(f"{where}.ScalingType: {scaling!r} is not one of {', '.join(SCALINGS)}")
        return None
    if low is None or high is None:
        return None
    if low > high:
        problems.append(f"{where}: MinValue {low:g} is above MaxValue {high:g}")
    given = low
    low, high = _within_limits(name, low, high, integer, where, problems)
    if scaling == "Logarithmic" and given <= 0:
        problems.append(f"{where}: Logarithmic scaling needs MinValue > 0")
    if scaling == "ReverseLogarithmic" and not (low >= 0 and high < 1):
        problems.append(f"{where}: ReverseLogarithmic scaling needs 0 <= MinValue, MaxValue < 1")
    return ParameterRange(name, kind, low, high, scaling=scaling)


def _within_limits(
    name: str, low: float, high: float, integer: bool, where: str, problems: list[str]
) -> tuple[float, float]:
    """The bounds, each checked against the hyperparameter's own rule (a problem noted
    when it breaks it); a continuous bound on an open limit is moved just inside it."""
    inward = {"MinValue": 1e-12, "MaxValue": -1e-12}
    for bound, value in (("MinValue", low), ("MaxValue", high)):
        text = str(int(value)) if integer else repr(value)
        broken = _valid(name, text)
        # a continuous range may end at an open limit of the hyperparameter (SageMaker's
        # documented momentum range 0-0.999 for momentum in (0, 1]): draws never hit it
        if broken and not integer and _valid(name, repr(value + inward[bound])) is None:
            broken = None
            low, high = (
                (value + inward[bound], high)
                if bound == "MinValue"
                else (low, value + inward[bound])
            )
        if broken is not None:
            problems.append(f"{where}.{bound}: {broken}")
    return low, high


def _categorical(name: str, values: Any, where: str, problems: list[str]) -> ParameterRange | None:
    if not isinstance(values, list) or not values or len(values) > 30:
        problems.append(f"{where}.Values: a list of 1 to 30 values")
        return None
    texts = tuple(str(v) for v in values)
    for v in texts:
        if (broken := _valid(name, v)) is not None:
            problems.append(f"{where}.Values: {broken}")
    if len(set(texts)) != len(texts):
        problems.append(f"{where}.Values: a value is listed twice")
    return ParameterRange(name, "categorical", values=texts)


def _ranges(raw: Any, problems: list[str]) -> tuple[ParameterRange, ...]:
    where = "HyperParameterTuningJobConfig.ParameterRanges"
    if not isinstance(raw, dict) or not raw:
        problems.append(f"{where}: at least one Integer, Continuous or Categorical range")
        return ()
    out: list[ParameterRange] = []
    for key, value in raw.items():
        if key not in KINDS:
            problems.append(f"{where}.{key}: not one of {', '.join(KINDS)}")
            continue
        if not isinstance(value, list):
            problems.append(f"{where}.{key}: a list of ranges")
            continue
        for i, item in enumerate(value):
            parsed = _range(KINDS[key], item, f"{where}.{key}[{i}]", problems)
            if parsed is not None:
                out.append(parsed)
    names = [r.name for r in out]
    for twice in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"{where}: {twice} has more than one range")
    if len(out) > 30:
        problems.append(f"{where}: {len(out)} ranges, SageMaker allows 30")
    return tuple(out)


def _int_field(raw: dict, key: str, where: str, lo: int, hi: int, problems: list[str]) -> int:
    value = raw.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        problems.append(f"{where}.{key}: an integer from {lo} to {hi}, got {value!r}")
        return lo
    return value


def _config(raw: Any, problems: list[str]) -> dict[str, Any]:
    where = "HyperParameterTuningJobConfig"
    if not isinstance(raw, dict):
        problems.append(f"{where}: required (an object)")
        return {}
    strategy = raw.get("Strategy", "Bayesian")
    if strategy not in STRATEGIES:
        problems.append(f"{where}.Strategy: {strategy!r} is not one of {', '.join(STRATEGIES)}")
    objective = raw.get("HyperParameterTuningJobObjective") or {}
    if objective.get("MetricName") != OBJECTIVE or objective.get("Type") != "Maximize":
        problems.append(
            f"{where}.HyperParameterTuningJobObjective: the algorithm's objective metric is "
            f'{{"Type": "Maximize", "MetricName": "{OBJECTIVE}"}}, got {objective!r}'
        )
    limits = raw.get("ResourceLimits") or {}
    lw = f"{where}.ResourceLimits"
    max_jobs = (
        _int_field(limits, "MaxNumberOfTrainingJobs", lw, 1, MAX_JOBS, problems)
        if strategy != "Grid" or "MaxNumberOfTrainingJobs" in limits
        else MAX_JOBS
    )
    max_parallel = _int_field(limits, "MaxParallelTrainingJobs", lw, 1, MAX_PARALLEL, problems)
    runtime = limits.get("MaxRuntimeInSeconds")
    if runtime is not None and (not isinstance(runtime, int) or not 120 <= runtime <= 15_768_000):
        problems.append(f"{lw}.MaxRuntimeInSeconds: an integer from 120 to 15768000 seconds")
    early = raw.get("TrainingJobEarlyStoppingType", "Off")
    if early not in EARLY_STOPPING:
        problems.append(f"{where}.TrainingJobEarlyStoppingType: Off or Auto, got {early!r}")
    target = (raw.get("TuningJobCompletionCriteria") or {}).get("TargetObjectiveMetricValue")
    if target is not None and not isinstance(target, int | float):
        problems.append(f"{where}.TuningJobCompletionCriteria.TargetObjectiveMetricValue: a number")
        target = None
    seed = raw.get("RandomSeed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        problems.append(f"{where}.RandomSeed: a non-negative integer")
        seed = None
    hb = (raw.get("StrategyConfig") or {}).get("HyperbandStrategyConfig")
    hyperband = None
    if strategy == "Hyperband":
        hb = hb or {}
        hyperband = (int(hb.get("MinResource", 1)), int(hb.get("MaxResource", 0)))
    elif hb:
        problems.append(f"{where}.StrategyConfig.HyperbandStrategyConfig: only with Hyperband")
    if strategy == "Hyperband" and early == "Auto":
        problems.append(f"{where}: Hyperband stops trials itself; TrainingJobEarlyStoppingType Off")
    return {
        "strategy": strategy, "max_jobs": max_jobs, "max_parallel": max_parallel,
        "max_runtime_seconds": runtime, "early_stopping": early, "target": target,
        "seed": seed, "hyperband": hyperband,
    }  # fmt: skip


def _warm_start(raw: Any, problems: list[str]) -> tuple[tuple[str, ...], str]:
    if raw is None:
        return (), ""
    where = "WarmStartConfig"
    parents = raw.get("ParentHyperParameterTuningJobs") if isinstance(raw, dict) else None
    kind = raw.get("WarmStartType") if isinstance(raw, dict) else None
    if not isinstance(parents, list) or not 1 <= len(parents) <= 5:
        problems.append(f"{where}.ParentHyperParameterTuningJobs: a list of 1 to 5 jobs")
        parents = []
    names = tuple(str((p or {}).get("HyperParameterTuningJobName", "")) for p in parents)
    if any(not NAME.fullmatch(n) for n in names):
        problems.append(f"{where}.ParentHyperParameterTuningJobs: each needs a valid name")
    if kind not in WARM_START_TYPES:
        problems.append(f"{where}.WarmStartType: one of {', '.join(WARM_START_TYPES)}")
    return names, str(kind or "")


def check_tuning_request(raw: Any) -> tuple[TuningSpec | None, list[str]]:
    """Every problem of a CreateHyperParameterTuningJob request; the spec when none."""
    from sdod.jobspec import check_job_request

    problems: list[str] = []
    if not isinstance(raw, dict):
        return None, ["the tuning request must be a JSON object"]
    name = raw.get("HyperParameterTuningJobName")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        problems.append(
            "HyperParameterTuningJobName: 1 to 32 letters, digits and hyphens, starting and "
            f"ending with a letter or digit, got {name!r}"
        )
    config = _config(raw.get("HyperParameterTuningJobConfig"), problems)
    job_config = raw.get("HyperParameterTuningJobConfig")
    job_config = job_config if isinstance(job_config, dict) else {}
    ranges = _ranges(job_config.get("ParameterRanges"), problems)
    training = raw.get("TrainingJobDefinition")
    if not isinstance(training, dict):
        problems.append("TrainingJobDefinition: required (the trials' training job)")
        training = {}
    static = {str(k): str(v) for k, v in (training.get("StaticHyperParameters") or {}).items()}
    for r in ranges:
        if r.name in static:
            problems.append(f"TrainingJobDefinition.StaticHyperParameters: {r.name} is also tuned")
    if config.get("strategy") == "Grid" and any(r.kind != "categorical" for r in ranges):
        problems.append("Grid search takes CategoricalParameterRanges only")
    parents, warm_type = _warm_start(raw.get("WarmStartConfig"), problems)
    spec = TuningSpec(
        name=str(name), ranges=ranges, training=training, static=static, parents=parents,
        warm_start_type=warm_type, raw=raw, **config,
    )  # fmt: skip
    if config.get("hyperband") and config["hyperband"][1] <= 0:
        epochs = static.get("epochs", "30")
        spec = _replace_hyperband(spec, int(epochs) if epochs.isdigit() else 30)
    if not problems:  # the trials' request, with a value from every range
        _, trial_problems = check_job_request(spec.example_request())
        problems += [f"TrainingJobDefinition: {p}" for p in trial_problems]
    return (spec if not problems else None), problems


def _replace_hyperband(spec: TuningSpec, epochs: int) -> TuningSpec:
    from dataclasses import replace

    low = spec.hyperband[0] if spec.hyperband else 1
    return replace(spec, hyperband=(low, epochs))


def parse_tuning_request(raw: Any) -> TuningSpec:
    spec, problems = check_tuning_request(raw)
    if spec is None:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise UserError(f"{len(problems)} problem(s) in the tuning request:\n{listed}")
    return spec
