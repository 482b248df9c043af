"""Distributed training: the launch plan from the job spec, torchrun, and what each worker
process needs (its place in the world, agreed stops, the global batch split by rank).

- One machine, several processes (GPUs): `torchrun --standalone --nproc-per-node N`, DDP.
  `mini_batch_size` is the global batch of the machine, split across its processes, as
  SageMaker splits it across GPUs.
- Several machines (`ResourceConfig.InstanceCount > 1`, `kv_store=dist_sync`): torchrun
  with a c10d rendezvous on every machine; the global batch is `mini_batch_size × machines`.
- `kv_store=dist_async` across machines is refused (see `plan_launch`).

Only rank 0 writes artifacts, checkpoints and the job's outcome; every rank sees the same
batches per step, agrees on stopping at the same step (one all-reduce per step), and
evaluates the full validation set, so they all keep the same "best" decision.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from sdod.errors import UserError
from sdod.settings import RDZV_PORT

OUTCOME_FILE = ".outcome.json"  # rank 0's JobOutcome, read back by the launching process


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1  # processes on this machine

    @property
    def machines(self) -> int:
        return max(1, self.size // self.local_size)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> World:
        """This process's place, from the variables torchrun sets (a world of 1 without)."""
        if not all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
            return cls()
        size = int(os.environ["WORLD_SIZE"])
        return cls(
            int(os.environ["RANK"]),
            size,
            int(os.environ["LOCAL_RANK"]),
            int(os.environ.get("LOCAL_WORLD_SIZE", size)),
        )

    def device(self) -> torch.device:
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def init(self) -> None:
        if self.size > 1 and not dist.is_initialized():
            if torch.cuda.is_available():
                torch.cuda.set_device(self.local_rank)
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when it is true on any (stops agreed at the same step)."""
        if self.size == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.size > 1:
            t = t.clone()
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t


class GlobalBatchSampler(Sampler[list[int]]):
    """Per-rank slices of the same global batches: one seeded permutation per epoch, cut
    into global batches of `global_batch`, rank r taking the r-th of `world` equal slices.
    With world 1 these are exactly the global batches, so N processes see, together, what
    one process sees alone. A dataset smaller than the batch gives one (short) batch."""

    def __init__(self, n: int, global_batch: int, world: World, seed: int = 0) -> None:
        if n < 1:
            raise ValueError("no samples")
        self.n, self.world, self.seed = n, world, seed
        self.global_batch = min(global_batch, n)
        self.per_rank = self.global_batch // world.size
        if self.per_rank < 1:
            raise UserError(
                f"mini_batch_size gives {self.global_batch} images per step, fewer than the "
                f"{world.size} training processes; raise mini_batch_size or use fewer processes"
            )
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return max(1, self.n // self.global_batch)

    def __iter__(self) -> Iterator[list[int]]:
        seeded = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.n, generator=seeded)
        start = self.world.rank * self.per_rank
        for b in range(len(self)):
            batch = order[b * self.global_batch : (b + 1) * self.global_batch]
            yield batch[start : start + self.per_rank].tolist()


# --- launching -------------------------------------------------------------------------


@dataclass(frozen=True)
class LaunchPlan:
    nproc_per_node: int
    nnodes: int = 1
    rdzv_endpoint: str | None = None
    job_name: str = "sdod"

    @property
    def distributed(self) -> bool:
        return self.nproc_per_node * self.nnodes > 1

    def command(self, job_root: str | Path) -> list[str]:
        cmd = [sys.executable, "-m", "torch.distributed.run"]
        if self.nnodes == 1:
            cmd += ["--standalone"]
        else:
            cmd += [
                f"--nnodes={self.nnodes}",
                "--rdzv-backend=c10d",
                f"--rdzv-endpoint={self.rdzv_endpoint}",
                f"--rdzv-id={self.job_name}",
            ]
        cmd += [f"--nproc-per-node={self.nproc_per_node}", "-m", "sdod", "train"]
        return [*cmd, "--job-root", str(job_root)]


def _endpoint(given: str | None, layout_config: Path) -> str | None:
    """`--rdzv-endpoint` (or SDOD_RDZV_ENDPOINT, passed in by the job), else the first of
    the hosts that SageMaker's `resourceconfig.json` names when it names real hosts."""
    endpoint = given
    if endpoint:
        return endpoint if ":" in endpoint else f"{endpoint}:{RDZV_PORT}"
    resource = layout_config / "resourceconfig.json"
    if resource.is_file():
        hosts = json.loads(resource.read_text()).get("hosts") or []
        if hosts and not str(hosts[0]).startswith("algo-"):  # sdod's placeholder names
            return f"{hosts[0]}:{RDZV_PORT}"
    return None


def plan_launch(
    *,
    job_name: str,
    instance_count: int,
    gpus_per_instance: int | None,
    kv_store: str | None,
    config_dir: Path,
    nproc_per_node: int | None = None,
    rdzv_endpoint: str | None = None,
) -> LaunchPlan:
    """How many processes on how many machines, from the spec and this machine.

    Processes per machine: `nproc_per_node` (the CLI's `--nproc-per-node`), else
    `ResourceConfig.GpusPerInstance` capped at the GPUs this machine has, else every
    visible GPU, else 1 (CPU)."""
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if nproc_per_node is not None:
        if nproc_per_node < 1:
            raise UserError(f"--nproc-per-node must be >= 1, got {nproc_per_node}")
        nproc = nproc_per_node
    elif gpus_per_instance:
        nproc = min(gpus_per_instance, visible) if visible else 1
    else:
        nproc = max(visible, 1)
    if instance_count == 1:
        return LaunchPlan(nproc, job_name=job_name)
    if kv_store == "dist_async":
        raise UserError(
            "kv_store=dist_async is not supported: sdod trains synchronously (DDP) across "
            "machines; use kv_store=dist_sync (or leave it unset) for "
            f"InstanceCount={instance_count}"
        )
    endpoint = _endpoint(rdzv_endpoint, config_dir)
    if endpoint is None:
        raise UserError(
            f"ResourceConfig.InstanceCount={instance_count}: give every machine the rendezvous "
            "address of the first one, `sdod train --rdzv-endpoint HOST[:PORT]` (or "
            "SDOD_RDZV_ENDPOINT), and run the same job on each"
        )
    return LaunchPlan(nproc, instance_count, endpoint, job_name)


def launch(
    plan: LaunchPlan,
    job_root: Path,
    output_dir: Path,
    *,
    log: Callable[[str], None],
    should_stop: Callable[[], bool],
) -> tuple[dict | None, int]:
    """Run the job under torchrun; return rank 0's outcome (None if it wrote none) and
    torchrun's exit code. A stop (SIGTERM, the deadline) is passed on to torchrun, which
    passes it on to every worker."""
    (output_dir / OUTCOME_FILE).unlink(missing_ok=True)
    cmd = plan.command(job_root)
    log(
        f"distributed training: {plan.nproc_per_node} process(es) per machine × {plan.nnodes} "
        f"machine(s): {' '.join(cmd[1:])}"
    )
    proc = subprocess.Popen(cmd)
    forwarded = False
    while proc.poll() is None:
        if not forwarded and should_stop():
            proc.terminate()  # SIGTERM: torchrun stops the workers, they save and exit
            forwarded = True
        time.sleep(0.2)
    outcome_file = output_dir / OUTCOME_FILE
    outcome = json.loads(outcome_file.read_text()) if outcome_file.is_file() else None
    return outcome, proc.returncode
