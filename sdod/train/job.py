"""A training job in SageMaker's local layout: read the job root, train, write model.tar.gz.

Outcomes: Completed (exit 0), Stopped by StoppingCondition or SIGTERM (exit 3, the
artifact holds the best weights so far and `metrics.json` says `"stopped": true`), Failed
(exit 1; exit 2 when the cause is the user's input). On failure `output/failure` holds
the message, as in a SageMaker container.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sdod.container import container_job
from sdod.errors import EXIT_USER, DataError, UserError
from sdod.hyperparameters import Hyperparameters
from sdod.joblayout import EXIT_COMPLETED, EXIT_FAILED, EXIT_STOPPED, JobLayout
from sdod.jobspec import TrainingJobSpec, load_job_spec
from sdod.settings import RuntimeSettings
from sdod.storage import atomic_write_bytes
from sdod.train.cpus import compute_threads, usable_cpus
from sdod.train.distributed import OUTCOME_FILE, LaunchPlan, World, launch, plan_launch
from sdod.train.init import initial_model
from sdod.train.outputs import JobOutcome, deliver, upload_failure, write_model
from sdod.train.samples import job_samples
from sdod.train.slots import WaitTimeout, training_slot
from sdod.train.stopping import StopFlag


def data_workers(world: World, configured: int | None = None) -> int:
    """Data-loader workers per training process: `configured` (SDOD_DATA_WORKERS), else
    the CPUs this process may use (`usable_cpus`) shared among the machine's training
    processes, 1 to 8 each (decoding and augmenting JPEGs is what feeds a GPU)."""
    if configured is not None:
        return configured
    return max(1, min(8, usable_cpus() // max(1, world.local_size)))


@dataclass
class _Resume:
    fit: Any
    optimizer: torch.optim.Optimizer


def _fetch_checkpoint(layout: JobLayout, spec: TrainingJobSpec) -> tuple[Path, str]:
    """The job's checkpoint file and where it came from: a restarted job on another machine
    fetches the one synced to CheckpointConfig.S3Uri (none there yet: a fresh start)."""
    from sdod.train import checkpoint as ckpt
    from sdod.transfer import sync_to_local

    path = layout.checkpoint_dir / ckpt.NAME
    source = str(path)
    if spec.checkpoint_uri and not path.is_file():
        try:
            sync_to_local(spec.checkpoint_uri, layout.checkpoint_dir, progress=False)
            source = spec.checkpoint_uri.rstrip("/") + "/" + ckpt.NAME
        except DataError:
            raise  # an unsafe key there: refused, not ignored
        except UserError:
            pass  # nothing there yet: a fresh start
    return path, source


def _checkpoint_writer(
    path: Path, spec: TrainingJobSpec, hp: Hyperparameters
) -> Callable[..., None]:
    """The end-of-epoch hook: rewrite the checkpoint (and sync it to CheckpointConfig). It
    records the job's name and hyperparameters: only the same job may resume it."""
    from sdod.storage import upload_file
    from sdod.train import checkpoint as ckpt

    def on_epoch_end(epoch: int, m: Any, opt: torch.optim.Optimizer, result: Any) -> None:
        state = {k: v.detach().cpu() for k, v in m.state_dict().items()}
        saved = ckpt.Checkpoint(
            state, opt.state_dict(), result, torch.get_rng_state(), spec.name, hp.to_strings()
        )
        ckpt.save(path, saved)
        if spec.checkpoint_uri:
            upload_file(path, spec.checkpoint_uri.rstrip("/") + "/" + ckpt.NAME)

    return on_epoch_end


def _resumable(
    layout: JobLayout,
    spec: TrainingJobSpec,
    hp: Hyperparameters,
    model: Any,
    device: torch.device,
    log: Callable[[str], None],
    world: World,
    settings: RuntimeSettings,
) -> _Resume:
    """FitOptions that write a checkpoint after every epoch and, when one exists (locally or
    at CheckpointConfig.S3Uri), continue from it."""
    from sdod.train import checkpoint as ckpt
    from sdod.train.loop import FitOptions
    from sdod.train.optim import make_optimizer

    path, source = _fetch_checkpoint(layout, spec)
    model.to(device)
    optimizer = make_optimizer(model, hp)
    resume = None
    if path.is_file():
        saved = ckpt.load(path)
        ckpt.check_identity(saved, job=spec.name, hyperparameters=hp.to_strings(), where=source)
        model.load_state_dict(saved.model)
        optimizer.load_state_dict(saved.optimizer)
        torch.set_rng_state(saved.torch_rng)
        resume = saved.result
        log(f"resuming from checkpoint {source}: {saved.epoch} epoch(s) done")
    train = spec.channel("train")
    opts = FitOptions(
        device=device,
        workers=data_workers(world, settings.data_workers),
        # ShuffleConfig.Seed of the train channel orders its records (reshuffled each epoch)
        seed=train.shuffle_seed if train is not None and train.shuffle_seed is not None else 0,
        start_epoch=resume.epochs_completed if resume else 0,
        resume=resume,
        # rank 0 keeps the checkpoints
        on_epoch_end=_checkpoint_writer(path, spec, hp) if world.is_main else None,
        world=world,
    )
    return _Resume(opts, optimizer)


def train_job(
    job_root: str | Path,
    *,
    log: Callable[[str], None] = print,
    stop: StopFlag | None = None,
    nproc_per_node: int | None = None,
    rdzv_endpoint: str | None = None,
    spec: TrainingJobSpec | None = None,
    settings: RuntimeSettings | None = None,
) -> JobOutcome:
    """Run the training job under `job_root`; never raises for job failures. `spec`: the
    job's request when the caller has parsed it already (else read from the job root).

    When the plan says several processes (GPUs, `--nproc-per-node`, machines), this process
    launches them with torchrun and reports rank 0's outcome; under torchrun it is one of
    them (only rank 0 writes the model, metrics, checkpoints and the outcome). `settings`:
    the environment's (`RuntimeSettings.from_env()`) unless given."""
    layout = JobLayout(Path(job_root))
    world = World.from_env()
    if world.local_rank == 0:  # each machine's first process keeps that machine's job root
        layout.output_dir.mkdir(parents=True, exist_ok=True)
        for name in ("failure", "metrics.json"):  # present again only if this run writes them
            (layout.output_dir / name).unlink(missing_ok=True)
    if stop is None:
        stop = StopFlag()
        if threading.current_thread() is threading.main_thread():
            stop.install_signal_handlers()  # SIGTERM: stop at the next step and save the model
    try:
        settings = settings or RuntimeSettings.from_env()
        spec = spec or _load_spec(layout)
        if world.size > 1:  # a torchrun worker: its launcher holds the slot and uploads
            world.init()
            outcome = _run(layout, spec, log if world.is_main else _quiet, stop, world, settings)
        else:
            outcome = _single_launcher(layout, spec, log, stop, settings, world, nproc_per_node,
                                       rdzv_endpoint)  # fmt: skip
            outcome = deliver(spec, outcome, log)
    except UserError as exc:
        message, code = str(exc), EXIT_USER
    except Exception as exc:  # an internal error (or no slot in time): the job fails
        message = str(exc) if isinstance(exc, WaitTimeout) else f"{type(exc).__name__}: {exc}"
        code = EXIT_FAILED
    else:
        _write_outcome(layout, world, outcome)
        return outcome
    finally:
        world.close()
    return _failed(layout, world, spec, message, code, log)


def _single_launcher(
    layout: JobLayout,
    spec: TrainingJobSpec,
    log: Callable[[str], None],
    stop: StopFlag,
    settings: RuntimeSettings,
    world: World,
    nproc_per_node: int | None,
    rdzv_endpoint: str | None,
) -> JobOutcome:
    """This machine's job: wait for a training slot, set the deadline (MaxRuntime from now,
    the whole job within MaxWait), then train here or launch the job's processes."""
    max_wait = spec.max_wait_seconds
    with training_slot(
        spec.name, max_wait=max_wait, log=log, should_stop=stop.is_set,
        slots=settings.training_slots, folder=settings.slot_dir,
    ):  # fmt: skip
        if stop.deadline is None:
            stop.deadline = time.monotonic() + spec.max_runtime_seconds
            if max_wait is not None:
                stop.deadline = min(stop.deadline, stop.start + max_wait)
        plan = _launch_plan(layout, spec, nproc_per_node, rdzv_endpoint or settings.rdzv_endpoint)
        if plan.distributed:
            return _launched(layout, plan, log, stop)
        return _run(layout, spec, log, stop, world, settings)


def _failed(
    layout: JobLayout,
    world: World,
    spec: TrainingJobSpec | None,
    message: str,
    code: int,
    log: Callable[[str], None],
) -> JobOutcome:
    """Record a failed job as SageMaker does: `output/failure` here and beside the model."""
    if world.local_rank == 0:
        atomic_write_bytes(layout.output_dir / "failure", (message + "\n").encode())
    log(f"sdod train: job failed{'' if world.is_main else f' (rank {world.rank})'}: {message}")
    outcome = JobOutcome("Failed", code, str(layout.root), message=message)
    if spec is not None and world.size == 1:
        upload_failure(spec, message, log)
    _write_outcome(layout, world, outcome)
    return outcome


def _quiet(_line: str) -> None:
    """Log for ranks other than 0: their lines would repeat rank 0's."""


def _write_outcome(layout: JobLayout, world: World, outcome: JobOutcome) -> None:
    if world.local_rank == 0 and world.size > 1:  # for this machine's launcher to report
        atomic_write_bytes(layout.output_dir / OUTCOME_FILE, json.dumps(outcome.to_dict()).encode())


def job_root_spec(job_root: str | Path) -> TrainingJobSpec:
    """The request of the job under `job_root` (written by `ingest`, or a SageMaker
    container's `/opt/ml` layout); UserError when it is not a job root."""
    return _load_spec(JobLayout(Path(job_root)))


def _load_spec(layout: JobLayout) -> TrainingJobSpec:
    if not layout.spec_file.is_file() and (layout.config_dir / "hyperparameters.json").is_file():
        return container_job(layout.root).spec  # a SageMaker container's /opt/ml
    if not layout.spec_file.is_file():
        raise UserError(
            f"{layout.root} is not a job root (no {layout.spec_file}); run `sdod ingest` first"
        )
    return load_job_spec(layout.spec_file)


def _launch_plan(
    layout: JobLayout,
    spec: TrainingJobSpec,
    nproc_per_node: int | None,
    rdzv_endpoint: str | None,
) -> LaunchPlan:
    hp = spec.hp
    return plan_launch(
        job_name=spec.name,
        instance_count=spec.instance_count,
        gpus_per_instance=spec.gpus_per_instance,
        kv_store=hp.kv_store,
        config_dir=layout.config_dir,
        nproc_per_node=nproc_per_node,
        rdzv_endpoint=rdzv_endpoint,
    )


def _launched(
    layout: JobLayout, plan: LaunchPlan, log: Callable[[str], None], stop: StopFlag
) -> JobOutcome:
    """Run the job's processes under torchrun and report rank 0's outcome."""
    found, code = launch(plan, layout.root, layout.output_dir, log=log, should_stop=stop.is_set)
    if found is not None:
        outcome = JobOutcome(**found)
        if outcome.artifact is None and outcome.status != "Failed":
            log(f"sdod train: {outcome.status} ({outcome.message})")
        return outcome
    failure = layout.output_dir / "failure"
    message = (
        failure.read_text().strip()
        if failure.is_file()
        else f"the training processes exited with code {code} and rank 0 reported no outcome "
        "(a worker failed: its error is in the log above)"
    )
    atomic_write_bytes(failure, (message + "\n").encode())
    return JobOutcome("Failed", EXIT_FAILED, str(layout.root), message=message)


def _run(
    layout: JobLayout,
    spec: TrainingJobSpec,
    log: Callable[[str], None],
    stop: StopFlag,
    world: World,
    settings: RuntimeSettings,
) -> JobOutcome:
    """Train here, recorded in MLflow when `MLFLOW_TRACKING_URI` is set (`sdod.train.tracked`)."""
    from sdod.train.tracked import tracked_job

    with tracked_job(spec, world, settings, log) as tracked:
        outcome = _train(layout, spec, tracked.log, stop, world, settings)
        files = (
            [Path(outcome.artifact), layout.output_dir / "metrics.json"] if outcome.artifact else []
        )
        tracked.done(outcome.status, files)
    return outcome


def _train(
    layout: JobLayout,
    spec: TrainingJobSpec,
    log: Callable[[str], None],
    stop: StopFlag,
    world: World,
    settings: RuntimeSettings,
) -> JobOutcome:
    from sdod.train.loop import fit

    hp = spec.hp
    if stop.deadline is None:
        stop.set_max_runtime(spec.max_runtime_seconds)
    train, validation = job_samples(layout, spec, hp, world, log)
    model = initial_model(layout, spec, hp, log, settings)
    device = world.device()
    threads = compute_threads(world.local_size) if device.type == "cpu" else None
    if threads:
        torch.set_num_threads(threads)
    opts = _resumable(layout, spec, hp, model, device, log, world, settings)
    log(
        f"training {hp.base_network} SSD{hp.image_shape} on {device.type}"
        + (f" × {world.size} processes" if world.size > 1 else "")
        + f": {len(train)} train, {len(validation)} validation images"
        + (f"; {torch.get_num_threads()} threads" if device.type == "cpu" else "")
        + f", {opts.fit.workers} data-loader workers"
    )
    started = time.monotonic()
    result = fit(
        model, hp, train.samples, validation.samples, stop=stop, opts=opts.fit,
        optimizer=opts.optimizer, log=log,
    )  # fmt: skip
    metrics = _job_metrics(result, hp, time.monotonic() - started)
    status, code = ("Stopped", EXIT_STOPPED) if result.stopped else ("Completed", EXIT_COMPLETED)
    if not world.is_main:  # rank 0 writes the model
        where = "this machine" if world.machines == 1 else "the first machine"
        note = f"rank {world.rank}: rank 0 on {where} writes the model"
        return JobOutcome(status, code, str(layout.root), None, metrics, note)
    if world.size > 1:
        metrics["processes"] = world.size
    path = write_model(layout, spec, hp, model, result.best_state, train, metrics)
    log(
        f"sdod train: {status}"
        + (f" ({result.stop_reason})" if result.stopped else "")
        + f"; model: {path}"
    )
    return JobOutcome(status, code, str(layout.root), str(path), metrics)


def _job_metrics(result: Any, hp: Hyperparameters, seconds: float) -> dict[str, Any]:
    """The model's metrics.json: the best validation mAP, how the fit ended, its history."""
    return {
        "validation:mAP": result.best_map,
        "best_epoch": result.best_epoch,
        "epochs_completed": result.epochs_completed,
        "epochs": hp.epochs,
        "stopped": result.stopped,
        "stop_reason": result.stop_reason,
        "early_stopped": result.early_stopped_at is not None,
        "early_stopping_epoch": result.early_stopped_at,
        "train_seconds": round(seconds, 1),
        "history": result.history,
    }
