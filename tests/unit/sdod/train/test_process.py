"""The training-process supervisor with real processes (small `python -c` scripts): the
metric lines, the deadline's SIGTERM, SIGKILL after the grace period, die-with-parent, a
stop on request, the whole process group; and the Airflow operator and a tuning lane both
running their jobs through it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sdod.train.metrics import MetricPoint, train_loss_line, validation_map_line
from sdod.train.process import ProcessOutcome, TrainingProcess, job_exit_code

ROOT = Path(__file__).resolve().parents[4]
PY = [sys.executable, "-I", "-S", "-u", "-c"]  # isolated and quick to start
IGNORE_TERM = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc, prctl")


def _alive(pid: int) -> bool:
    """Running (a zombie that nobody reaps, e.g. an orphan in a container, is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


def _supervise(script: str, **options: Any) -> tuple[ProcessOutcome, list[str]]:
    lines: list[str] = []
    process = TrainingProcess([*PY, script], on_line=lines.append, poll_interval=0.05, **options)
    process.start()
    return process.wait(), lines


def test_lines_stream_and_metric_lines_are_parsed() -> None:
    printed = [
        "sdod train: starting",
        train_loss_line(0, 3, "cross_entropy", 2.5),
        validation_map_line(0, 0.25),
        validation_map_line(1, 0.5),
        "#throughput_metric: host=algo-1, train throughput=12.5 records/second",
    ]
    points: list[MetricPoint] = []
    outcome, lines = _supervise(
        f"import sys\nprint({printed[:3]!r}[0])\n"
        + "".join(f"print({line!r}, file=sys.stderr)\n" for line in printed[1:])
        + "sys.exit(3)",
        on_metric=points.append,
    )
    assert lines == printed  # stdout and stderr, one stream, in order
    assert outcome.exit_code == 3 and outcome.stopped_by is None and not outcome.killed
    assert [(p.name, p.epoch, p.value) for p in points] == [
        ("train:cross_entropy", 0, 2.5),
        ("validation:mAP", 0, 0.25),
        ("validation:mAP", 1, 0.5),
        ("train:throughput", None, 12.5),
    ]
    assert outcome.metrics == {
        "validation:mAP": [{"epoch": 0, "value": 0.25}, {"epoch": 1, "value": 0.5}],
        "train:cross_entropy": [{"epoch": 0, "value": 2.5}],
        "train:smooth_l1": [],
        "train:throughput": 12.5,
    }


def test_sigterm_at_the_deadline_and_the_job_ends_as_it_chooses() -> None:
    said: list[str] = []
    outcome, lines = _supervise(
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: (print('saving'), sys.exit(3)))\n"
        "print('ready')\ntime.sleep(60)",
        deadline_seconds=1.0,
        log=said.append,
    )
    assert lines == ["ready", "saving"]
    assert outcome.exit_code == 3 and outcome.stopped_by == "deadline" and not outcome.killed
    assert 1.0 <= outcome.seconds < 10 and said == ["deadline of 1 s reached: SIGTERM"]


def test_sigkill_after_the_grace_period_when_sigterm_is_ignored() -> None:
    outcome, lines = _supervise(
        IGNORE_TERM + "print('ready')\ntime.sleep(60)", deadline_seconds=1.0, grace_seconds=0.5
    )
    assert lines == ["ready"]  # it ignored SIGTERM from the start
    assert outcome.exit_code == -signal.SIGKILL and outcome.killed
    assert outcome.stopped_by == "deadline" and 1.5 <= outcome.seconds < 10


def test_stop_on_request() -> None:
    process = TrainingProcess(
        [*PY, "import time\nprint('ready')\ntime.sleep(60)"], poll_interval=0.05
    )
    process.on_line = lambda line: process.stop() if line == "ready" else None
    process.stop()  # before start: nothing to stop, and nothing started
    assert process.pid is None
    process.start()
    outcome = process.wait()
    assert outcome.exit_code == -signal.SIGTERM and outcome.stopped_by == "request"
    assert not outcome.killed and outcome.seconds < 10


def test_stop_with_wait_kills_on_its_own_as_on_kill_must() -> None:
    """From another thread (Airflow's on_kill), with `wait()` still following the job."""
    process = TrainingProcess([*PY, IGNORE_TERM + "print('ready')\ntime.sleep(60)"])
    ready = threading.Event()
    process.on_line = lambda line: ready.set()
    process.start()
    outcomes: list[ProcessOutcome] = []
    follower = threading.Thread(target=lambda: outcomes.append(process.wait()))
    follower.start()
    assert ready.wait(10)
    began = time.monotonic()
    process.stop(wait=0.5)  # the grace period (120 s) is not waited for
    assert time.monotonic() - began < 5 and process.pid is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)
    follower.join(10)
    (outcome,) = outcomes
    assert outcome.exit_code == -signal.SIGKILL and outcome.killed
    assert outcome.stopped_by == "request"


GRANDPARENT = (
    "import subprocess, sys, time\n"
    "g = subprocess.Popen([sys.executable, '-I', '-S', '-c', 'import time; time.sleep(60)'],"
    " stdout={out})\n"
    "print(g.pid, flush=True)\n"
    "{then}"
)


@linux
def test_a_stop_reaches_the_whole_process_group() -> None:
    pids: list[int] = []
    process = TrainingProcess(
        [*PY, GRANDPARENT.format(out="subprocess.DEVNULL", then="time.sleep(60)")],
        on_line=lambda line: (pids.append(int(line)), process.stop()),
        poll_interval=0.05,
    )
    process.start()
    outcome = process.wait()
    assert outcome.exit_code == -signal.SIGTERM and outcome.stopped_by == "request"
    assert len(pids) == 1 and _gone(pids[0])  # the grandchild did not survive


@linux
def test_what_is_left_of_the_group_is_killed_when_the_job_exits() -> None:
    """A leftover grandchild that holds the output open neither survives nor stalls `wait`."""
    outcome, lines = _supervise(GRANDPARENT.format(out="None", then="sys.exit(0)"))
    assert outcome.exit_code == 0 and outcome.stopped_by is None and outcome.seconds < 5
    assert _gone(int(lines[0]))


SUPERVISOR = """
import sys
from sdod.train.process import TrainingProcess
process = TrainingProcess([sys.executable, "-I", "-S", "-c", "import time; time.sleep(60)"])
process.start()
print(process.pid, flush=True)
process.wait()
"""


@linux
def test_the_job_dies_with_its_supervisor() -> None:
    supervisor = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert supervisor.stdout is not None
    child = int(supervisor.stdout.readline())
    try:
        assert _alive(child)
        supervisor.kill()  # SIGKILL: no handler, no cleanup of its own
        supervisor.wait(10)
        assert _gone(child)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def test_construction_starts_nothing_and_a_failing_callback_kills_the_job() -> None:
    def refuse(line: str) -> None:
        raise RuntimeError(f"cannot take {line!r}")

    process = TrainingProcess(
        [*PY, "import time\nprint('ready')\ntime.sleep(60)"], on_line=refuse, poll_interval=0.05
    )
    assert process.pid is None
    with pytest.raises(RuntimeError, match="before start"):
        process.wait()
    process.start()
    with pytest.raises(RuntimeError, match="cannot take 'ready'"):
        process.wait()
    assert process.pid is not None and not _alive(process.pid)
    with pytest.raises(ValueError, match="deadline_seconds must be positive"):
        TrainingProcess(["true"], deadline_seconds=0)


def test_a_job_our_deadline_ended_after_saving_keeps_its_own_outcome(tmp_path: Path) -> None:
    from sdod.joblayout import EXIT_STOPPED

    killed = ProcessOutcome(exit_code=-signal.SIGTERM, stopped_by="deadline")
    assert job_exit_code(killed, tmp_path) == -signal.SIGTERM  # nothing saved
    (tmp_path / "model").mkdir()
    (tmp_path / "output").mkdir()
    (tmp_path / "model" / "model.tar.gz").write_bytes(b"x")
    (tmp_path / "output" / "metrics.json").write_text(json.dumps({"stopped": True}))
    assert job_exit_code(killed, tmp_path) == EXIT_STOPPED
    by_request = ProcessOutcome(exit_code=-signal.SIGTERM, stopped_by="request")
    assert job_exit_code(by_request, tmp_path) == -signal.SIGTERM


# `sdod train` stood in for by a script with its arguments: metric lines (on stderr with
# --json, then the JSON outcome on stdout); a tuning trial named *-002-* does worse and
# waits to be stopped; with FAKE_TRAIN_HANGS it ignores SIGTERM and touches that file
FAKE_TRAIN = """
import json, os, signal, sys, time
args = sys.argv[1:]
if os.environ.get("FAKE_TRAIN_HANGS"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    open(os.environ["FAKE_TRAIN_HANGS"], "w").close()
    time.sleep(60)
spec = args[args.index("--job-spec") + 1] if "--job-spec" in args else None
worse = spec is not None and "-002-" in json.load(open(spec))["TrainingJobName"]
values = (0.1, 0.1) if worse else (0.2, 0.4, 0.6)


def end(status, code):
    if "--json" in args:
        print(json.dumps({"status": status, "metrics": {"validation:mAP": values[-1]}}))
    sys.exit(code)


signal.signal(signal.SIGTERM, lambda *_: end("Stopped", 3))
for epoch, value in enumerate(values):
    line = f"#quality_metric: host=algo-1, epoch={epoch}, validation mAP <score>=({value})"
    print(line, file=sys.stderr if "--json" in args else sys.stdout, flush=True)
if worse:
    time.sleep(60)
end("Completed", 0)
"""


@pytest.fixture
def fake_train(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every `TrainingProcess` started runs FAKE_TRAIN instead of `sdod train` (with its
    arguments); the commands it was given, as started."""
    started: list[list[str]] = []
    real_start = TrainingProcess.start

    def start(self: TrainingProcess) -> None:
        started.append(self.command)
        assert self.command[1:5] == ["-u", "-m", "sdod", "train"], self.command
        self.command = [*PY, FAKE_TRAIN, *self.command[5:]]
        real_start(self)

    monkeypatch.setattr(TrainingProcess, "start", start)
    return started


def test_a_tuning_lane_runs_and_stops_its_trials_through_the_supervisor(
    tmp_path: Path, fake_train: list[list[str]]
) -> None:
    from sdod.tune.search import TuningRun
    from sdod.tune.spec import parse_tuning_request
    from tests.unit.sdod.tune.test_spec import request

    raw = request(ResourceLimits={"MaxNumberOfTrainingJobs": 2, "MaxParallelTrainingJobs": 1})
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    run = TuningRun(parse_tuning_request(raw), work=tmp_path, storage=storage, log=print)
    assert run.lane(0) == 2
    first, second = run.records()
    assert len(fake_train) == 2 and all("--json" in command for command in fake_train)
    assert first.status == "Completed" and first.history == [0.2, 0.4, 0.6]
    assert first.objective == 0.6 and not first.early_stopped
    # worse than the median after epoch 1: pruned, and the stop reached the job (SIGTERM)
    assert second.status == "Stopped" and second.early_stopped and second.history == [0.1, 0.1]
    assert (tmp_path / second.name / "train.log").read_text().count("validation mAP") == 2


@pytest.fixture
def operator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    pytest.importorskip("airflow")
    monkeypatch.syspath_prepend(str(ROOT / "plugins"))
    from sdod_operators import SSDTrainingOperator

    from sdod.demo.dataset import make_sample_data
    from sdod.jobspec.form import spec_from_form

    make_sample_data(tmp_path / "data", train=4, validation=2, num_classes=2, seed=3)
    hp = {"num_classes": "2", "num_training_samples": "4", "epochs": "3"}
    config = spec_from_form(
        job_name="op-sup",
        data_uri=str(tmp_path / "data"),
        output_uri=str(tmp_path / "out"),
        max_runtime_seconds=600,
        hyperparameters=hp,
    )
    return SSDTrainingOperator(
        task_id="train",
        config=config,
        job_root_base=str(tmp_path / "jobs"),
        aws_conn_id=None,
        check_interval=0.05,
    )


def test_the_operator_runs_its_job_through_the_supervisor(
    operator: Any, fake_train: list[list[str]], tmp_path: Path
) -> None:
    result = operator.execute({})
    (command,) = fake_train
    assert command[-2:] == ["--job-root", str(tmp_path / "jobs" / "op-sup")]
    assert result["status"] == "Completed" and result["exit_code"] == 0
    assert result["metrics"]["validation:mAP"] == [
        {"epoch": 0, "value": 0.2},
        {"epoch": 1, "value": 0.4},
        {"epoch": 2, "value": 0.6},
    ]
    assert result["final_validation_mAP"] == 0.6


def test_the_operators_on_kill_stops_a_job_that_ignores_sigterm(
    operator: Any, fake_train: list[list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.sdk.exceptions import AirflowException

    monkeypatch.setenv("FAKE_TRAIN_HANGS", str(tmp_path / "hanging"))
    monkeypatch.setattr("sdod_operators.ON_KILL_GRACE_SECONDS", 0.5)
    errors: list[BaseException] = []

    def execute() -> None:
        try:
            operator.execute({})
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=execute, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not (tmp_path / "hanging").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    pgid = operator._process.pid
    operator.on_kill()
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)
    thread.join(10)
    assert len(errors) == 1 and isinstance(errors[0], AirflowException)
    assert "exit code -9" in str(errors[0])
