"""Where the demo's training job spends its time, phase by phase (issue 31).

Makes the demo's sample data (`make-sample-data`: 960 train, 60 validation images), packs
it into RecordIO as the DAG's pack task does, then runs the demo's training job
(`sdod.demo.recipe`, `--epochs` of its 10) with `sdod.stages.train` on the packed channels,
timing each phase from outside the loop: sdod's code is wrapped, not copied or edited.

- data: waiting for the loader's next batch;
- forward, loss, backward, optimiser: one step's parts (forward hooks on the model, the
  loss function wrapped, the gradient clipping and the optimiser's step hooks as marks; on
  a CPU each mark is the work's end; `backward` includes `zero_grad`, `optimiser` the
  clipping);
- step other: the rest of the loop's step (learning rate, stop check, logged losses);
- validation, checkpoint: each epoch's mAP pass and checkpoint write + sync;
- job other: the job around the fit (reading RecordIO, model set-up, model.tar.gz).

In the same process, after the fit, the pure model step: the loop's own `_step` (forward,
loss, backward, clipping, optimiser step) on one fixed batch already in memory, `--iters`
times, the model's and optimiser's state restored afterwards. Also with channels-last
(which the loop uses on a GPU only), for reference. The ratio training step / pure step is
the issue's figure: (data + step + step other) per step over the pure step.

Run: `.venv/bin/python bench/train_profile.py` (about 2 minutes on 2 cores). Knobs:
`--workers N` (SDOD_DATA_WORKERS), `--threads N` (torch intra-op threads), `--epochs N`,
`--name` (the results file `bench/results/<name>.json`, default `train_profile`).
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, table, write_results

PHASES = ["data", "forward", "loss", "backward", "optimiser", "step other"]


class Clock:
    """Seconds per phase and the marks of the step in progress."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)
        self.marks: dict[str, float] = {}

    def add(self, phase: str, seconds: float) -> None:
        self.total[phase] += seconds
        self.count[phase] += 1

    def mark(self, name: str) -> None:
        self.marks[name] = time.perf_counter()


def timed(clock: Clock, phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            clock.add(phase, time.perf_counter() - start)

    return wrapper


def _batches(clock: Clock, loader: Any, first: list) -> Iterator[Any]:
    """The loader's batches, the wait for each timed; a step's other phases are split at
    its marks when the next batch is asked for (or the epoch ends)."""
    it = iter(loader)
    while True:
        start = time.perf_counter()
        if clock.marks:
            _close_step(clock, start)
        try:
            batch = next(it)
        except StopIteration:
            return
        clock.add("data", time.perf_counter() - start)
        clock.mark("got")
        if not first:
            first.append([t.clone() for t in batch])
        yield batch


def _close_step(clock: Clock, end: float) -> None:
    m = clock.marks
    if {"got", "fwd0", "fwd1", "loss1", "clip0", "opt1"} <= m.keys():
        clock.add("forward", m["fwd1"] - m["fwd0"])
        clock.add("loss", m["loss1"] - m["fwd1"])
        clock.add("backward", m["clip0"] - m["loss1"])
        clock.add("optimiser", m["opt1"] - m["clip0"])
        clock.add("step other", (m["fwd0"] - m["got"]) + (end - m["opt1"]))
    m.clear()


def instrument(clock: Clock, captured: dict) -> None:
    """Wrap the loop's and the job's functions (this process only)."""
    from sdod.train import job, loop

    first: list = []
    captured["batch"] = first
    loop.iter_with_stop_signals_blocked = lambda loader: _batches(clock, loader, first)
    loss_fn = loop.multibox_loss

    def loss(*args: Any, **kwargs: Any) -> Any:
        out = loss_fn(*args, **kwargs)
        clock.mark("loss1")
        return out

    loop.multibox_loss = loss
    clip = torch.nn.utils.clip_grad_norm_

    def clip_marked(*args: Any, **kwargs: Any) -> Any:
        clock.mark("clip0")
        return clip(*args, **kwargs)

    torch.nn.utils.clip_grad_norm_ = clip_marked
    from torch.optim.optimizer import register_optimizer_step_post_hook

    register_optimizer_step_post_hook(lambda *_: clock.mark("opt1"))
    _wrap_prepare(clock, captured, loop)
    writer = job._checkpoint_writer
    job._checkpoint_writer = lambda *a: timed(clock, "checkpoint", writer(*a))
    loop._Epochs.validate = timed(clock, "validation", loop._Epochs.validate)  # type: ignore[method-assign]
    loop._Epochs.train_epoch = timed(clock, "train epochs", loop._Epochs.train_epoch)  # type: ignore[method-assign]
    fit = loop.fit
    loop.fit = timed(clock, "fit", fit)


def _wrap_prepare(clock: Clock, captured: dict, loop: Any) -> None:
    prepare = loop._prepare

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        run = prepare(*args, **kwargs)
        run.net.register_forward_pre_hook(lambda *_: clock.mark("fwd0"))
        run.net.register_forward_hook(lambda *_: clock.mark("fwd1"))
        captured["run"] = run
        return run

    loop._prepare = wrapped
    # the job imports `fit` from the loop when it runs: this wrapper (timed by `instrument`)
    fit = loop.fit

    def fit_then_pure(*args: Any, **kwargs: Any) -> Any:
        result = fit(*args, **kwargs)
        iters, start = captured["iters"], time.perf_counter()
        captured["pure"] = pure_step(run := captured["run"], captured["batch"][0], clock, iters)
        clock.add("pure", time.perf_counter() - start)  # not the job's: taken out of `fit`
        if run.loader._iterator is not None:  # its persistent workers, ended cleanly
            run.loader._iterator._shutdown_workers()
        return result

    loop.fit = fit_then_pure


def pure_step(run: Any, batch: list[torch.Tensor], clock: Clock, iters: int) -> dict:
    """Seconds per call of the loop's `_step` on one fixed in-memory batch (after 3 warm-up
    calls), in all and per phase (the same marks as the job's steps), as the loop runs it
    and with channels-last; the model's and optimiser's state are restored after."""
    model_state = copy.deepcopy(run.model.state_dict())
    opt_state = copy.deepcopy(run.optimizer.state_dict())
    run.model.train()
    out: dict = {}
    for name, layout in (("pure", torch.contiguous_format), ("pure channels-last", None)):
        images = batch[0]
        if layout is None:
            run.model.to(memory_format=torch.channels_last)
            images = images.contiguous(memory_format=torch.channels_last)
        for _ in range(3):
            run._step(images, batch[1], batch[2])
        phases, start = Clock(), time.perf_counter()
        for _ in range(iters):
            clock.marks.clear()
            clock.mark("got")
            run._step(images, batch[1], batch[2])
            phases.marks = dict(clock.marks)
            _close_step(phases, time.perf_counter())
        out[name] = (time.perf_counter() - start) / iters
        out[f"{name} phases"] = {p: phases.total[p] / iters for p in PHASES if p != "data"}
    clock.marks.clear()
    run.model.to(memory_format=torch.contiguous_format)
    run.model.load_state_dict(model_state)
    run.optimizer.load_state_dict(opt_state)
    return out


def packed_spec(root: Path, epochs: int) -> dict[str, Any]:
    """The demo's training request on packed RecordIO channels (data made and packed once
    under `root`, reused by later runs)."""
    from sdod import stages
    from sdod.demo.dataset import make_sample_data
    from sdod.demo.recipe import DEMO_HYPERPARAMETERS
    from sdod.jobspec.form import spec_from_form

    hp = {**DEMO_HYPERPARAMETERS, "epochs": str(epochs)}
    spec = spec_from_form(
        job_name="sdod-demo", data_uri=str(root / "bucket"), output_uri=str(root / "output"),
        hyperparameters=hp, max_runtime_seconds=86400,
    )  # fmt: skip
    if not (root / "bucket").is_dir():
        make_sample_data(root / "bucket")
    packed = stages.pack_job(job_spec=spec, work_uri=str(root / "work")).train_spec
    # a fresh job each run: nothing delivered under its name, no checkpoint to resume from
    shutil.rmtree(root / "output", ignore_errors=True)
    shutil.rmtree(packed["CheckpointConfig"]["S3Uri"], ignore_errors=True)
    return packed


def profile(args: argparse.Namespace) -> tuple[list[dict], dict]:
    from sdod import stages

    root = Path(args.root)
    os.environ["SDOD_CACHE_DIR"] = str(root / "cache")
    spec = packed_spec(root, args.epochs)
    clock, captured = Clock(), {"iters": args.iters}
    instrument(clock, captured)
    started = time.perf_counter()
    job_root = tempfile.mkdtemp(prefix="job-", dir=root)
    outcome = stages.train(job_spec=spec, job_root=job_root, log=lambda _: None)
    total = time.perf_counter() - started
    shutil.rmtree(job_root, ignore_errors=True)
    if outcome.status != "Completed":
        raise SystemExit(f"the training job ended {outcome.status}: {outcome.message}")
    return rows_of(clock, captured["pure"], total), {
        "mAP": outcome.metrics["validation:mAP"],
        "steps": clock.count["forward"],
    }


def rows_of(clock: Clock, pure: dict, total: float) -> list[dict]:
    """The table: each phase's seconds in the job, per step, its share of the job, and the
    pure step's figure for the same phase."""
    t, steps = clock.total, clock.count["forward"]
    whole = total - t["pure"]  # the pure-step measurement ran inside `fit`: not the job's
    seconds = {p: t[p] for p in PHASES}
    seconds["step other"] += t["train epochs"] - sum(t[p] for p in PHASES)  # epoch ends
    seconds |= {
        "validation": t["validation"],
        "checkpoint": t["checkpoint"],
        "fit other": t["fit"] - t["pure"] - t["train epochs"] - t["validation"] - t["checkpoint"],
        "job other": total - t["fit"],
    }
    phases = pure["pure phases"]
    rows = [
        _row(p, s, steps, whole, phases.get(p, 0.0 if p in PHASES else None))
        for p, s in seconds.items()
    ]
    train_step = sum(seconds[p] for p in PHASES)
    rows.append(_row("training step", train_step, steps, whole, pure["pure"]))
    rows.append(_row("whole job", whole, steps, whole, None))
    rows.append(_row("pure step, channels-last", None, steps, whole, pure["pure channels-last"]))
    return rows


def _row(phase: str, seconds: float | None, steps: int, whole: float, pure: float | None) -> dict:
    return {
        "phase": phase,
        "job s": "" if seconds is None else round(seconds, 2),
        "job ms/step": "" if seconds is None else round(1000 * seconds / steps, 1),
        "share": "" if seconds is None else f"{100 * seconds / whole:.1f}%",
        "pure ms/step": "" if pure is None else round(1000 * pure, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--iters", type=int, default=20, help="pure-step iterations")
    parser.add_argument("--workers", type=int, help="SDOD_DATA_WORKERS (default: sdod's)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "sdod-profile"))
    parser.add_argument("--name", default="train_profile")
    args = parser.parse_args()
    if args.workers is not None:
        os.environ["SDOD_DATA_WORKERS"] = str(args.workers)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rows, facts = profile(args)
    by = {r["phase"]: r for r in rows}
    ratio = by["training step"]["job ms/step"] / by["training step"]["pure ms/step"]
    settings = {
        "workers": os.environ.get("SDOD_DATA_WORKERS", "sdod default (CPUs, 1-8)"),
        "threads": torch.get_num_threads(),
        "epochs": args.epochs,
        "pure_iters": args.iters,
        **facts,
        "ratio_training_to_pure": round(ratio, 3),
    }
    print(f"{machine()} {settings}")
    print(table(rows, ["phase", "job s", "job ms/step", "share", "pure ms/step"]))
    print(f"training step / pure step: {ratio:.2f}x")
    path = write_results(args.name, [{"settings": settings}, *rows])
    print(f"raw numbers: {path}")


if __name__ == "__main__":
    main()
