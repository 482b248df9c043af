"""What keeps a GPU fed during training (issue 32): the step never makes the host wait for
the GPU except on the steps that log their loss, the optimiser steps every parameter with
multi-tensor kernels (MXNet's update rules, as on the CPU), and cuDNN picks its fastest
kernels for the fixed input size.

The first test runs everywhere (it counts the reads of the loss on a CPU); the `gpu` ones
check the same on CUDA with torch's sync debug mode, which raises on any synchronising call.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from sdod.data.imagejson import read_image_json
from sdod.data.sample import Sample
from sdod.demo.dataset import make_sample_data
from sdod.hyperparameters import Hyperparameters, parse_hyperparameters
from sdod.model.ssd import SSD, SSDConfig
from sdod.train import loop
from sdod.train.loop import FitOptions, fit
from sdod.train.optim import make_optimizer
from sdod.train.stopping import StopFlag

DEVICE = torch.device(os.environ.get("SDOD_GPU_TEST_DEVICE", "cuda"))
SDOD = Path(loop.__file__).resolve().parents[1]


def _data(tmp_path: Path, images: int) -> list[Sample]:
    make_sample_data(tmp_path, train=images, validation=1, num_classes=3, seed=5)
    return read_image_json(tmp_path / "train", tmp_path / "train_annotation").samples


def _hp(images: int, optimizer: str = "sgd") -> Hyperparameters:
    raw = {
        "num_classes": 3,
        "num_training_samples": images,
        "base_network": "resnet-lite",
        "use_pretrained_model": 0,
        "optimizer": optimizer,
        "epochs": 1,
        "mini_batch_size": 2,
        "augmentation": "none",
    }
    return parse_hyperparameters(raw)


def test_a_training_epoch_reads_the_loss_only_on_the_steps_it_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples = _data(tmp_path, 8)  # 4 steps of 2: logged at the first and the last
    reads: list[str] = []
    item = torch.Tensor.item

    def counting_item(self: torch.Tensor) -> float | int | bool:
        caller = sys._getframe(1).f_code.co_filename
        if Path(caller).is_relative_to(SDOD):  # sdod's reads (the loader's seed is torch's)
            reads.append(caller)
        return item(self)

    monkeypatch.setattr(torch.Tensor, "item", counting_item)
    lines: list[str] = []
    torch.manual_seed(0)
    opts = FitOptions(device=torch.device("cpu"), workers=0)
    model = SSD(SSDConfig("resnet-lite", 3, 300))
    fit(model, _hp(8), samples, [], stop=StopFlag(), opts=opts, log=lines.append)
    logged = [line for line in lines if "train cross_entropy" in line]
    assert [line.split("batch=")[1].split(" ")[0] for line in logged] == ["0", "3"]
    assert len(reads) == 2 * len(logged), reads  # cross-entropy and smooth L1, when logged


@pytest.mark.gpu
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_sgd_and_adam_step_on_the_gpu_as_on_the_cpu(optimizer: str) -> None:
    """MXNet's rules with the rate changing between steps (warm-up): the device's weights are
    the CPU's to float32 rounding."""
    torch.manual_seed(0)
    cpu = SSD(SSDConfig("resnet-lite", 3, 300))
    device = SSD(SSDConfig("resnet-lite", 3, 300)).to(DEVICE)
    device.load_state_dict(cpu.state_dict())
    optimizers = [make_optimizer(m, _hp(8, optimizer)) for m in (cpu, device)]
    for step, lr in enumerate((0.01, 0.05, 0.02)):
        grads = [torch.randn_like(p) for p in cpu.parameters()]
        for model, opt in zip((cpu, device), optimizers, strict=True):
            for p, g in zip(model.parameters(), grads, strict=True):
                p.grad = g.to(p.device)
            for group in opt.param_groups:
                group["lr"] = lr
            opt.step()
        for (name, a), b in zip(cpu.named_parameters(), device.parameters(), strict=True):
            torch.testing.assert_close(b.cpu(), a, rtol=1e-5, atol=1e-6, msg=f"{step} {name}")


@pytest.mark.gpu
def test_a_training_step_on_the_gpu_never_waits_for_it(tmp_path: Path) -> None:
    samples = _data(tmp_path, 4)
    torch.manual_seed(0)
    model = SSD(SSDConfig("resnet-lite", 3, 300))
    opts = FitOptions(device=DEVICE, workers=0)
    run = loop._prepare(model, _hp(4), samples, [], StopFlag(), opts, None, lambda _: None)
    assert torch.backends.cudnn.benchmark is (DEVICE.type == "cuda")
    images, cls_t, box_t = next(iter(run.loader))  # pinned by the loader on a GPU
    run._step(images, cls_t, box_t)  # the first step: cuDNN's choices, lazy state
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            ce, l1 = run._step(images, cls_t, box_t)
    finally:
        if DEVICE.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")
    assert ce.device.type == DEVICE.type and bool(torch.isfinite(ce + l1))
