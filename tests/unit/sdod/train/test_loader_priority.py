"""On a CPU the training loader's workers run at the lowest priority (they fill the compute
threads' gaps instead of stalling them mid-kernel); on a GPU they feed it at full priority."""

from __future__ import annotations

import os
import signal
from types import SimpleNamespace

import torch
from torch.utils.data import DataLoader, Dataset

from sdod.train.distributed import World
from sdod.train.loop import _cpu_worker, _loader
from sdod.train.stopping import ignore_stop_signals


class _WhatTheWorkerIs(Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        ignored = signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
        return torch.tensor([os.getpriority(os.PRIO_PROCESS, 0), int(ignored)])


def test_cpu_workers_run_at_the_lowest_priority_and_ignore_stop_signals() -> None:
    loader = DataLoader(_WhatTheWorkerIs(), batch_size=2, num_workers=2, worker_init_fn=_cpu_worker)
    rows = torch.cat(list(loader))
    assert rows[:, 0].tolist() == [19] * 4, "the workers kept the parent's priority"
    assert rows[:, 1].tolist() == [1] * 4
    assert os.getpriority(os.PRIO_PROCESS, 0) < 19, "the training process itself was lowered"


def test_the_loader_lowers_its_workers_on_a_cpu_only() -> None:
    hp = SimpleNamespace(image_shape=300, augmentation="light")
    model = SimpleNamespace(anchors=torch.zeros(1, 4))

    def opts(device: str) -> SimpleNamespace:
        return SimpleNamespace(world=World(), seed=0, workers=1, device=torch.device(device))

    samples = [object()] * 4  # never loaded: no batch is drawn
    assert _loader(samples, model, hp, 2, opts("cpu"))[0].worker_init_fn is _cpu_worker
    assert _loader(samples, model, hp, 2, opts("cuda"))[0].worker_init_fn is ignore_stop_signals
