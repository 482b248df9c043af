"""The one supervisor of a training process: the Airflow operator's job and every tuning
trial run `sdod train` as a child through `TrainingProcess`.

What it does, in the order a job meets it:

- `start()` (never `__init__`) spawns the command in its own process group, so a stop
  reaches the job's own children (data loader workers, torchrun's workers) too; on Linux
  the child also dies when the thread that started it dies (PR_SET_PDEATHSIG): a worker
  killed with -9 or a lost node takes its job with it, as a SageMaker instance would,
  instead of leaving an orphan that keeps writing the same checkpoint and output.
- `wait()` streams the child's output line by line to `on_line`, parses the SageMaker
  metric lines (`sdod.train.metrics.parse_metric_line`) to `on_metric` and into the
  outcome, and enforces the deadline: SIGTERM to the group when it passes, SIGKILL once
  the grace period after it has passed with the job still running.
- `stop()` asks for the same from another thread (or a signal handler: with `wait`
  seconds it escalates to SIGKILL itself instead of relying on `wait()`).
- When the job's main process has exited, whatever is left of its group is killed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from sdod.train.metrics import MetricPoint, parse_metric_line

GRACE_SECONDS = 120.0  # SIGTERM to SIGKILL, as SageMaker's StopTrainingJob allows
# metrics kept per epoch, as a list of {"epoch", "value"}; the others keep their last value
SERIES = ("validation:mAP", "train:cross_entropy", "train:smooth_l1")
_DRAIN_SECONDS = 5.0  # after the job's exit: how long its last lines may take to arrive
_LOG = logging.getLogger(__name__)


def train_command(
    *, job_root: str | Path, job_spec: str | Path | None = None, json_outcome: bool = False
) -> list[str]:
    """`sdod train` as a child of this interpreter, unbuffered so lines come as written."""
    cmd = [sys.executable, "-u", "-m", "sdod", "train", "--job-root", str(job_root)]
    if job_spec is not None:
        cmd += ["--job-spec", str(job_spec)]
    return cmd + (["--json"] if json_outcome else [])


@dataclass(frozen=True)
class ProcessOutcome:
    """How a supervised process ended.

    `exit_code` is the child's own code, or minus the signal that ended it. `stopped_by`
    says whether this supervisor stopped it ("deadline", "request") or not (None); `killed`
    whether SIGKILL was needed (no exit within the grace period after SIGTERM).
    """

    exit_code: int
    stopped_by: Literal["deadline", "request"] | None = None
    killed: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def _load_prctl() -> Any:
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # a libc without prctl
        return None


_PRCTL = _load_prctl() if sys.platform.startswith("linux") else None
_PR_SET_PDEATHSIG = 1


def _die_with(prctl: Callable[..., int], parent: int) -> Callable[[], None]:
    """The child's first act before exec (looked up beforehand, so the forked child only
    calls it): SIGKILL when its parent goes; and if the parent already went between fork
    and this call, which the kernel would not report, exit now."""
    sigkill = int(signal.SIGKILL)

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sigkill)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    """Reader thread: the child's output, line by line; None at its end."""
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


class TrainingProcess:
    """One training process under supervision (see the module docstring).

    :param command: the program and its arguments (`train_command` for `sdod train`).
    :param env: its environment (default: this process's).
    :param deadline_seconds: SIGTERM this long after `start()` (None: no deadline).
    :param grace_seconds: SIGKILL this long after a SIGTERM the job has not obeyed.
    :param on_line: every output line, without its newline.
    :param on_metric: every metric point parsed from a line.
    :param log: the supervisor's own messages (a SIGTERM or SIGKILL sent).
    :param stdout: send the child's standard output to this file and stream only its
        standard error (for `sdod train --json`); default: both streams, interleaved.
    :param poll_interval: seconds between deadline checks when no line arrives.

    Start it from the thread that waits for it: the kernel's die-with-parent follows the
    thread that forked the child, not the process.
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        deadline_seconds: float | None = None,
        grace_seconds: float = GRACE_SECONDS,
        on_line: Callable[[str], None] | None = None,
        on_metric: Callable[[MetricPoint], None] | None = None,
        log: Callable[[str], None] | None = None,
        stdout: Path | None = None,
        poll_interval: float = 0.5,
    ) -> None:
        if not command:
            raise ValueError("command is empty: give the program and its arguments")
        if deadline_seconds is not None and deadline_seconds <= 0:
            raise ValueError(f"deadline_seconds must be positive, got {deadline_seconds}")
        if grace_seconds < 0 or poll_interval <= 0:
            raise ValueError(
                f"grace_seconds must be >= 0 and poll_interval > 0, got {grace_seconds} "
                f"and {poll_interval}"
            )
        self.command = list(command)
        self.env = env
        self.deadline_seconds = deadline_seconds
        self.grace_seconds = grace_seconds
        self.on_line = on_line
        self.on_metric = on_metric
        self.log = log or _LOG.warning
        self.stdout = stdout
        self.poll_interval = poll_interval
        self._proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.Lock()
        self._started = 0.0
        self._term_at: float | None = None  # when SIGTERM went to the group
        self._stopped_by: Literal["deadline", "request"] | None = None
        self._killed = False
        self._metrics: dict[str, Any] = {name: [] for name in SERIES}

    @property
    def pid(self) -> int | None:
        """The child's pid, which is also its process group's id (None before start)."""
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Spawn the command (once) and its output reader."""
        if self._proc is not None:
            raise RuntimeError(f"already started (pid {self._proc.pid})")
        with contextlib.ExitStack() as files:
            out: IO[str] | int = subprocess.PIPE
            if self.stdout is not None:
                out = files.enter_context(self.stdout.open("w"))
            self._proc = subprocess.Popen(
                self.command,
                stdout=out,
                stderr=subprocess.STDOUT if self.stdout is None else subprocess.PIPE,
                text=True,
                encoding="utf-8",
                errors="replace",
                env=self.env,
                start_new_session=True,
                preexec_fn=_die_with(_PRCTL, os.getpid()) if _PRCTL is not None else None,
            )
        self._started = time.monotonic()
        stream = self._proc.stdout if self.stdout is None else self._proc.stderr
        assert stream is not None
        threading.Thread(target=_pump, args=(stream, self._lines), daemon=True).start()

    def wait(self) -> ProcessOutcome:
        """Stream, parse and police the job until it has exited; how it ended. If a
        callback raises, the job is killed before the error goes on."""
        proc = self._proc
        if proc is None:
            raise RuntimeError("wait() before start()")
        try:
            self._follow(proc)
        except BaseException:
            self._signal(signal.SIGKILL)
            proc.wait()
            raise
        return ProcessOutcome(
            exit_code=proc.returncode,
            stopped_by=self._stopped_by,
            killed=self._killed,
            metrics=self._metrics,
            seconds=time.monotonic() - self._started,
        )

    def run(self) -> ProcessOutcome:
        """`start()`, then `wait()`."""
        self.start()
        return self.wait()

    def stop(self, *, wait: float | None = None) -> None:
        """Stop on request: SIGTERM to the process group now, SIGKILL after the grace
        period (sent by `wait()`). With `wait`, block up to that many seconds for the job
        to exit and SIGKILL it here if it has not (for a caller, such as a signal handler,
        that cannot count on `wait()` running). A no-op before `start()` or after the end."""
        proc = self._proc
        if proc is None:
            return
        self._terminate("request")
        if wait is None:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            self.log(f"no exit {wait:g} s after SIGTERM: SIGKILL to process group {proc.pid}")
            self._killed = True
            self._signal(signal.SIGKILL)
            proc.wait(timeout=10)

    def _follow(self, proc: subprocess.Popen[str]) -> None:
        """Until the job has exited and its output has ended (or, held open by something
        outside its group, stayed open for a few seconds after the exit)."""
        eof, ended_at = False, None
        while True:
            if eof:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=self.poll_interval)
            else:
                with contextlib.suppress(queue.Empty):
                    line = self._lines.get(timeout=self.poll_interval)
                    eof = line is None
                    if line:
                        self._take(line)
            if proc.poll() is None:
                self._police()
                continue
            if ended_at is None:
                ended_at = time.monotonic()
                self._signal(signal.SIGKILL)  # what is left of its group
            if eof or time.monotonic() > ended_at + _DRAIN_SECONDS:
                return

    def _take(self, line: str) -> None:
        if self.on_line is not None:
            self.on_line(line)
        point = parse_metric_line(line)
        if point is None:
            return
        if point.name in SERIES and point.epoch is not None:
            self._metrics[point.name].append({"epoch": point.epoch, "value": point.value})
        else:
            self._metrics[point.name] = point.value
        if self.on_metric is not None:
            self.on_metric(point)

    def _police(self) -> None:
        """SIGTERM at the deadline; SIGKILL once the grace period after a SIGTERM is over."""
        now = time.monotonic()
        deadline = self.deadline_seconds
        if deadline is not None and self._term_at is None and now >= self._started + deadline:
            self.log(f"deadline of {deadline:g} s reached: SIGTERM")
            self._terminate("deadline")
        term_at = self._term_at
        if term_at is not None and not self._killed and now >= term_at + self.grace_seconds:
            self.log(f"no exit {self.grace_seconds:g} s after SIGTERM: SIGKILL")
            self._killed = True
            self._signal(signal.SIGKILL)

    def _terminate(self, why: Literal["deadline", "request"]) -> None:
        with self._lock:
            if self._term_at is not None or self._proc is None or self._proc.poll() is not None:
                return  # one SIGTERM per job, and none once it has ended
            self._stopped_by, self._term_at = why, time.monotonic()
        self._signal(signal.SIGTERM)

    def _signal(self, sig: signal.Signals) -> None:
        """`sig` to the whole process group (the child is its leader: its pid names it)."""
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, sig)


def job_exit_code(outcome: ProcessOutcome, job_root: str | Path) -> int:
    """`sdod train`'s exit code for `outcome`: a job our deadline SIGTERM ended after it
    had saved its model and metrics has its own outcome (Completed or Stopped), not a
    killed one."""
    import json

    from sdod.joblayout import EXIT_COMPLETED, EXIT_STOPPED, JobLayout

    layout = JobLayout(Path(job_root))
    metrics = layout.output_dir / "metrics.json"
    saved = (
        (layout.model_dir / "model.tar.gz").is_file()
        and metrics.is_file()
        and not (layout.output_dir / "failure").exists()
    )
    if outcome.exit_code != -signal.SIGTERM or outcome.stopped_by != "deadline" or not saved:
        return outcome.exit_code
    return EXIT_STOPPED if json.loads(metrics.read_text()).get("stopped") else EXIT_COMPLETED
