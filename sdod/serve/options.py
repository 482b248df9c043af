"""What `sdod serve` takes from its operator (`ServeOptions`: limits, workers, batching) and
from each request (`parse_options`: `score_threshold` and `top_k`).

SageMaker's hosting environment (`SAGEMAKER_MODEL_SERVER_WORKERS`,
`SAGEMAKER_MODEL_SERVER_TIMEOUT`, `SAGEMAKER_BIND_TO_PORT`, `SAGEMAKER_MAX_PAYLOAD_IN_MB`)
fills what the command line leaves unset (`from_environment`), as SageMaker's own model
servers read it.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any
from urllib.parse import parse_qs

from sdod.errors import UserError

MAX_ATTRIBUTES = 1024  # SageMaker's limit on CustomAttributes
DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() takes "²" and int() "١"
NUMBER = re.compile(r"(?:[0-9]{1,10}(?:\.[0-9]{0,10})?|\.[0-9]{1,10})(?:[eE][-+]?[0-9]{1,3})?")
SMALL_MACHINE = 4  # CPUs up to which each gets its own worker (bench/serve.py, 2 cores)
MAY_BE_ZERO = {"max_delay_ms"}  # no waiting for company
WORKER_MEMORY_SHARE = 0.5  # of the machine's memory, for the workers' models at most


@dataclass(frozen=True)
class ServeOptions:
    """The server's limits and shape. Each worker process holds its own model, queue and
    batches (`max_queue` bounds both the images waiting for the model and the image
    requests in progress, per worker); `max_connections` counts the whole server's;
    `workers=None` decides from the CPUs and the model's size (`default_workers`)."""

    max_request_bytes: int = 20 << 20  # body; more: 413
    timeout: float = 30.0  # seconds to deliver a whole request; then 408
    max_connections: int = 128  # open at once, all workers; more: 503 with Retry-After
    decoders: int = max(2, os.cpu_count() or 2)  # images decoding at once, per worker
    workers: int | None = None
    max_batch: int = 8  # images in one forward pass
    max_delay_ms: float = 0.0  # how long the first image of a batch waits for company
    max_queue: int = 64  # images waiting for the model, per worker; more: 503
    queue_timeout: float = 10.0  # an image not started by then: 503 with Retry-After
    keep_alive: float = 5.0  # an idle connection is closed after this many seconds
    graceful_timeout: float = 30.0  # SIGTERM: in-flight requests get this long to finish

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if value is None:
                continue
            whole = str(item.type).startswith("int")
            low_ok = value == 0 and item.name in MAY_BE_ZERO
            if not (0 < value < math.inf or low_ok) or (whole and value != int(value)):
                flag = "--" + item.name.replace("_", "-")
                raise UserError(f"{flag} must be a positive number, got {value}")

    def merged(self, given: Mapping[str, Any]) -> ServeOptions:
        """These options with the non-None values of `given` (e.g. argparse's) replacing."""
        names = {f.name for f in fields(self)}
        return replace(self, **{k: v for k, v in given.items() if k in names and v is not None})


def from_environment(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The options SageMaker's hosting environment sets (for `merged`), checked."""
    env = os.environ if env is None else env
    wanted: dict[str, tuple[str, Callable[[str], Any]]] = {
        "SAGEMAKER_MODEL_SERVER_WORKERS": ("workers", int),
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": ("queue_timeout", float),
        "SAGEMAKER_MAX_PAYLOAD_IN_MB": ("max_request_bytes", lambda v: int(float(v) * (1 << 20))),
    }
    found: dict[str, Any] = {}
    for name, (option, parse) in wanted.items():
        if env.get(name, "").strip():
            try:
                found[option] = parse(env[name].strip())
            except ValueError:
                raise UserError(f"${name}={env[name]!r} is not a number") from None
    return found


def environment_port(env: Mapping[str, str] | None = None) -> int | None:
    """`SAGEMAKER_BIND_TO_PORT`, where SageMaker hosting asks the container to listen."""
    value = (os.environ if env is None else env).get("SAGEMAKER_BIND_TO_PORT", "").strip()
    if not value:
        return None
    if not DIGITS.fullmatch(value) or not 0 < int(value) < 65536:
        raise UserError(f"$SAGEMAKER_BIND_TO_PORT={value!r} is not a port number")
    return int(value)


def default_workers(model_bytes: int, cpus: int | None = None, memory: int | None = None) -> int:
    """One worker per CPU this process may use on a small machine (up to `SMALL_MACHINE`:
    on 2 cores two single-threaded workers served 1.5x what one worker with both cores
    did), one per two CPUs above; as many as half the memory holds models of this size
    (three times the archive, for the loaded weights and activations); at least one."""
    cpus = cpus or len(os.sched_getaffinity(0))
    wanted = cpus if cpus <= SMALL_MACHINE else cpus // 2
    if memory is None:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    by_memory = int(memory * WORKER_MEMORY_SHARE) // max(1, 3 * model_bytes)
    return max(1, min(wanted, by_memory))


def _number(key: str, value: str, where: str) -> float:
    if not NUMBER.fullmatch(value):
        raise UserError(f"{where}: {key}={value!r} is not a decimal number; e.g. {key}=0.5")
    return float(value)


def parse_options(query: str, attributes: str | None) -> tuple[float, int | None]:
    """`(score_threshold, top_k)` from the query string and the custom-attributes header
    (the query wins); unknown keys are ignored, a malformed known one is a UserError."""
    return _threshold_and_top_k(_raw_options(query, attributes))


def parse_request(query: str, attributes: str | None) -> tuple[float, int | None, Any]:
    """`(score_threshold, top_k, slicing)`: `parse_options` and the sliced-inference keys
    `tile_size`, `tile_overlap` (default a fifth of the size) and `tile_whole` (0/1);
    slicing is None without `tile_size`."""
    opts = _raw_options(query, attributes)
    return (*_threshold_and_top_k(opts), _slicing(opts))


def _integer(opts: dict[str, tuple[str, str]], key: str, default: int | None) -> int | None:
    if key not in opts:
        return default
    value, where = opts[key]
    if not DIGITS.fullmatch(value) or len(value) > 9:
        raise UserError(f"{where}: {key} must be a whole number of pixels, got {value!r}")
    return int(value)


def _slicing(opts: dict[str, tuple[str, str]]) -> Any:
    from sdod.serve.slicing import Slicing

    size = _integer(opts, "tile_size", None)
    if size is None:
        for key in ("tile_overlap", "tile_whole"):
            if key in opts:
                raise UserError(f"{opts[key][1]}: {key} needs tile_size (e.g. tile_size=400)")
        return None
    overlap = _integer(opts, "tile_overlap", size // 5)
    whole, where = opts.get("tile_whole", ("0", ""))
    if whole not in ("0", "1"):
        raise UserError(f"{where}: tile_whole must be 0 or 1, got {whole!r}")
    return Slicing(size, overlap or 0, whole == "1")


def _raw_options(query: str, attributes: str | None) -> dict[str, tuple[str, str]]:
    """Each key's last value and where it came from (the query wins over the header)."""
    header = "X-Amzn-SageMaker-Custom-Attributes"
    try:
        opts = {k: (v[-1], "query") for k, v in parse_qs(query, max_num_fields=32).items()}
    except ValueError as exc:
        raise UserError(f"query string: {exc}") from None
    text = attributes or ""
    if len(text) > MAX_ATTRIBUTES or not text.isascii() or not text.isprintable():
        raise UserError(f"{header}: at most {MAX_ATTRIBUTES} printable ASCII characters")
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise UserError(
                f"{header}: {part!r} is not key=value; e.g. score_threshold=0.5,top_k=3"
            )
        opts.setdefault(key.strip(), (value.strip(), header))
    return opts


def _threshold_and_top_k(opts: dict[str, tuple[str, str]]) -> tuple[float, int | None]:
    threshold = 0.0
    if "score_threshold" in opts:
        value, where = opts["score_threshold"]
        threshold = _number("score_threshold", value, where)
        if not 0.0 <= threshold <= 1.0:
            raise UserError(f"{where}: score_threshold must be in [0, 1], got {value}")
    top_k = None
    if "top_k" in opts:
        value, where = opts["top_k"]
        if not DIGITS.fullmatch(value) or len(value) > 9 or int(value) < 1:
            raise UserError(f"{where}: top_k must be a positive integer, got {value!r}")
        top_k = int(value)
    return threshold, top_k


def parameter_options(parameters: Any, where: str) -> tuple[float, int | None]:
    """`(score_threshold, top_k)` from an Open Inference Protocol `parameters` object: JSON
    numbers as they are, strings as the query's are."""
    if parameters is None:
        return 0.0, None
    if not isinstance(parameters, dict):
        raise UserError(f"{where}: parameters must be an object")
    threshold, top_k = 0.0, None
    value = parameters.get("score_threshold")
    if isinstance(value, str):
        threshold = _threshold_and_top_k({"score_threshold": (value, where)})[0]
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if not 0.0 <= value <= 1.0:  # NaN fails too
            raise UserError(f"{where}: score_threshold must be in [0, 1], got {value}")
        threshold = float(value)
    elif value is not None:
        raise UserError(f"{where}: parameters.score_threshold must be a number")
    value = parameters.get("top_k")
    if isinstance(value, bool) or not isinstance(value, int | str | None):
        raise UserError(f"{where}: parameters.top_k must be a positive integer")
    if value is not None:
        top_k = _threshold_and_top_k({"top_k": (str(value), where)})[1]
    return threshold, top_k
