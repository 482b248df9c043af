"""SageMaker's Object Detection hyperparameters: names, defaults, valid ranges.

Values arrive as strings (as in a CreateTrainingJob request) and are validated once, here;
every message names the hyperparameter, the value and what is allowed. Unknown names are
errors (a typo must not silently train with a default).

sdod extensions, documented as such: `base_network` also accepts `mobilenet-v3`, a light
network that trains on a CPU in minutes, and `resnet-lite`, a small dense ResNet that
learns faster from scratch (the demo's; it has no ImageNet weights, so it needs
`use_pretrained_model=0`); and `augmentation` picks the training
augmentation: `ssd` (default: the paper's photometric distortion, zoom-out, IoU crop,
flip), `light` (flip, colour, an occasional mild crop: short runs on small sets), `aerial`
(`light` with vertical flips and quarter turns: images seen from above), `none`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from sdod.errors import UserError

BASE_NETWORKS = ("vgg-16", "resnet-50", "mobilenet-v3", "resnet-lite")
FROM_SCRATCH_ONLY = ("resnet-lite",)  # no ImageNet weights exist for these
OPTIMIZERS = ("sgd", "adam", "rmsprop", "adadelta")
# MXNet's kvstore types: SageMaker documents the dist_ ones, its jobs log `device` (one
# machine); every one but dist_async trains synchronously, as DDP does
KV_STORES = ("local", "device", "dist_sync", "dist_device_sync", "dist_async")
AUGMENTATIONS = ("ssd", "light", "aerial", "none")
# SageMaker's private keys (`_tuning_objective_metric` from the tuner, `_kvstore`, ...)
IGNORED_PREFIXES = ("_",)
TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no", "")


@dataclass(frozen=True)
class Hyperparameters:
    num_classes: int
    num_training_samples: int
    base_network: str = "vgg-16"
    use_pretrained_model: int = 1
    epochs: int = 30
    learning_rate: float = 0.001
    lr_scheduler_factor: float = 0.1
    lr_scheduler_step: tuple[int, ...] = ()
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0005
    mini_batch_size: int = 32
    image_shape: int = 300
    label_width: int = 350
    nms_threshold: float = 0.45
    nms_topk: int = 400  # example/ssd's: the most detections an image keeps (not documented)
    overlap_threshold: float = 0.5
    freeze_layer_pattern: str = ""
    kv_store: str | None = None
    early_stopping: bool = False
    early_stopping_min_epochs: int = 10
    early_stopping_patience: int = 5
    early_stopping_tolerance: float = 0.0
    augmentation: str = "ssd"
    ignored: tuple[str, ...] = field(default=(), compare=False)

    @property
    def max_objects(self) -> int:
        """Objects per image that fit in `label_width` (2 header numbers, 5 per object)."""
        return (self.label_width - 2) // 5

    def to_strings(self) -> dict[str, str]:
        """Back to SageMaker's string map (what `hyperparams.json` in model.tar.gz holds)."""
        out = {}
        for key, value in asdict(self).items():
            if key == "ignored" or value is None:
                continue
            if key == "lr_scheduler_step":
                value = ",".join(map(str, value))
            out[key] = str(value)
        return out


def _clean(raw: str) -> str:
    """A value as consoles and SDKs store it: whitespace and one pair of quotes removed."""
    text = raw.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1].strip()
    return text


# SageMaker sets no upper bound on these; sdod does, the same one `read_artifact` enforces,
# so that every model a job trains can be read back (sdod.artifact imports these)
MAX_NUM_CLASSES = 1000
MAX_IMAGE_SHAPE = 1024
MAX_NMS_TOPK = 10000


def _int(lo: int | None = None, hi: int | None = None) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(_clean(raw))
        except ValueError:
            raise UserError(f"hyperparameter {name}={raw!r} must be an integer") from None
        if lo is not None and value < lo:
            raise UserError(f"hyperparameter {name}={raw!r} must be an integer >= {lo}")
        if hi is not None and value > hi:
            raise UserError(
                f"hyperparameter {name}={raw!r} must be at most {hi} (a model.tar.gz with "
                "more is refused when it is read)"
            )
        return value

    return parse


def _float(
    lo: float, hi: float, *, lo_open: bool = True, hi_open: bool = False
) -> Callable[[str, str], float]:
    interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"

    def parse(name: str, raw: str) -> float:
        try:
            value = float(_clean(raw))
        except ValueError:
            raise UserError(
                f"hyperparameter {name}={raw!r} must be a number in {interval}"
            ) from None
        low_ok = value > lo if lo_open else value >= lo
        high_ok = value < hi if hi_open else value <= hi
        if not (low_ok and high_ok):
            raise UserError(f"hyperparameter {name}={raw!r} is outside its valid range {interval}")
        return value

    return parse


def _choice(options: tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = _clean(raw)
        if value not in options:
            raise UserError(f"hyperparameter {name}={raw!r} must be one of {', '.join(options)}")
        return value

    return parse


def _flag(name: str, raw: str) -> int:
    value = _clean(raw).lower()
    if value not in ("0", "1", "true", "false"):
        raise UserError(f"hyperparameter {name}={raw!r} must be 0 or 1")
    return int(value in TRUE)


def _bool(name: str, raw: str) -> bool:
    value = _clean(raw).lower()
    if value not in TRUE + FALSE or not value:
        raise UserError(f"hyperparameter {name}={raw!r} must be True or False")
    return value in TRUE


def _steps(name: str, raw: str) -> tuple[int, ...]:
    parts = [p.strip() for p in _clean(raw).split(",") if p.strip()]
    try:
        steps = tuple(int(p) for p in parts)
    except ValueError:
        raise UserError(
            f"hyperparameter {name}={raw!r} must be comma-separated epochs, e.g. '10,20'"
        ) from None
    if any(s < 1 for s in steps) or list(steps) != sorted(set(steps)):
        raise UserError(f"hyperparameter {name}={raw!r} must list increasing positive epochs")
    return steps


def _regex(name: str, raw: str) -> str:
    """A regular expression; `false`, `none` or empty (what consoles store) freeze nothing."""
    raw = _clean(raw)
    if raw.lower() in ("false", "none", ""):
        return ""
    try:
        re.compile(raw)
    except re.error as exc:
        raise UserError(
            f"hyperparameter {name}={raw!r} is not a valid regular expression ({exc})"
        ) from None
    return raw


PARSERS: dict[str, Callable[[str, str], Any]] = {
    "num_classes": _int(1, MAX_NUM_CLASSES),
    "num_training_samples": _int(1),
    "base_network": _choice(BASE_NETWORKS),
    "use_pretrained_model": _flag,
    "epochs": _int(1),
    "learning_rate": _float(0, 1),
    "lr_scheduler_factor": _float(0, 1, hi_open=True),
    "lr_scheduler_step": _steps,
    "optimizer": _choice(OPTIMIZERS),
    "momentum": _float(0, 1),
    "weight_decay": _float(0, 1, hi_open=True),
    "mini_batch_size": _int(1),
    "image_shape": _int(300, MAX_IMAGE_SHAPE),
    "label_width": _int(7),
    "nms_threshold": _float(0, 1),
    "nms_topk": _int(1, MAX_NMS_TOPK),
    "overlap_threshold": _float(0, 1),
    "freeze_layer_pattern": _regex,
    "kv_store": _choice(KV_STORES),
    "early_stopping": _bool,
    "early_stopping_min_epochs": _int(1),
    "early_stopping_patience": _int(1),
    "early_stopping_tolerance": _float(0, 1, lo_open=False, hi_open=False),
    "augmentation": _choice(AUGMENTATIONS),
}
REQUIRED = ("num_classes", "num_training_samples")


def _parse_each(raw: Mapping[str, Any]) -> Hyperparameters:
    """Each value on its own (names, types, ranges, the required ones)."""
    values: dict[str, Any] = {}
    ignored = []
    for name, value in raw.items():
        if name.startswith(IGNORED_PREFIXES):
            ignored.append(name)
            continue
        if name not in PARSERS:
            close = difflib.get_close_matches(name.lower(), PARSERS, n=1, cutoff=0.85)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UserError(
                f"unknown hyperparameter {name!r}{hint}; valid names: {', '.join(sorted(PARSERS))}"
            )
        values[name] = PARSERS[name](name, str(value))
    missing = [name for name in REQUIRED if name not in values]
    if missing:
        raise UserError(f"hyperparameter(s) {', '.join(missing)} are required")
    return Hyperparameters(**values, ignored=tuple(ignored))


def _combination_problem(hp: Hyperparameters) -> str | None:
    """What is wrong with valid values together, if anything."""
    if hp.base_network in FROM_SCRATCH_ONLY and hp.use_pretrained_model:
        return (
            f"base_network={hp.base_network!r} has no ImageNet weights (it is sdod's own "
            "network), but use_pretrained_model is 1 (SageMaker's default): set "
            "use_pretrained_model=0 to train it from scratch"
        )
    return None


def parse_hyperparameters(raw: Mapping[str, Any]) -> Hyperparameters:
    """Validate SageMaker's string map; numbers are accepted too (JSON configs)."""
    hp = _parse_each(raw)
    problem = _combination_problem(hp)
    if problem:
        raise UserError(problem)
    return hp


def hyperparameter_problems(raw: Mapping[str, Any]) -> list[str]:
    """Every problem of a hyperparameter map, one message each (for `validate-job`)."""
    problems = []
    for name, value in raw.items():
        if name.startswith(IGNORED_PREFIXES):
            continue
        try:
            _parse_each({**dict.fromkeys(REQUIRED, "1"), name: value})
        except UserError as exc:
            problems.append(str(exc))
    missing = [name for name in REQUIRED if name not in raw]
    if missing:
        problems.append(f"hyperparameter(s) {', '.join(missing)} are required")
    if not problems:  # each value is valid: then they must also go together
        combination = _combination_problem(_parse_each(raw))
        problems += [combination] if combination else []
    return problems
