"""On the GPU: bf16 autocast training numerics of each base network at 300 and 512,
channels-last, post-processing on the GPU equal to the CPU's, and a checkpoint written on
the GPU loading on the CPU.

`gpu`-marked: skipped without CUDA (tests/conftest.py). `bench/gpu_check.sh --dry-run` runs
the cheap ones on the CPU (`SDOD_GPU_TEST_DEVICE=cpu`, `--noconftest`), so that this code
cannot rot while no GPU is lent.

Tolerances, bf16 autocast against fp32 (TF32 off) on the same weights and batch, in eval
mode (BatchNorm on its running statistics: in train mode, batch statistics over the 1×1
extra maps of a small batch turn rounding noise into sign flips, so only finiteness is
asserted there):
- training loss (cross-entropy + smooth L1): relative difference ≤ 2 % (measured with CPU
  bf16 on vgg-16 and resnet-50 at 300: ≤ 0.5 %);
- gradients: cosine similarity of the flattened gradients ≥ 0.99 (measured: 1.000).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sdod.model.boxes import match
from sdod.model.loss import multibox_loss
from sdod.model.postprocess import ImageDetections, postprocess
from sdod.model.ssd import SSD, SSDConfig, anchors_for

pytestmark = pytest.mark.gpu

DEVICE = torch.device(os.environ.get("SDOD_GPU_TEST_DEVICE", "cuda"))
REPO = Path(__file__).resolve().parents[2]
NUM_CLASSES = 3
LOSS_RTOL = 0.02
GRAD_COSINE = 0.99


def _batch(anchors: torch.Tensor, size: int, n: int) -> tuple[torch.Tensor, ...]:
    """Random uint8 images `[n, 3, size, size]` and their matched anchor targets."""
    g = torch.Generator().manual_seed(size + n)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    cls, box = [], []
    for _ in range(n):
        xy = torch.rand(4, 2, generator=g) * size * 0.6
        wh = torch.rand(4, 2, generator=g) * size * 0.3 + 20
        labels = torch.randint(0, NUM_CLASSES, (4,), generator=g)
        c, b = match(torch.cat([xy, xy + wh], 1), labels, anchors)
        cls.append(c)
        box.append(b)
    return images, torch.stack(cls), torch.stack(box)


def _loss_and_grad(
    model: SSD, batch: tuple[torch.Tensor, ...], *, bf16: bool, channels_last: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The training loss (a float64 scalar) and the flattened float64 gradients."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt).zero_grad(set_to_none=True)
    images, cls_t, box_t = (t.to(DEVICE) for t in batch)
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=bf16):
        cls, box = model(images.contiguous(memory_format=fmt))
    ce, l1 = multibox_loss(cls, box, cls_t, box_t)
    (ce + l1).backward()
    grads = [p.grad.flatten() for p in model.parameters() if p.grad is not None]
    return (ce + l1).detach().double().cpu(), torch.cat(grads).double().cpu()


@pytest.mark.parametrize("size", [300, 512])
@pytest.mark.parametrize("net", ["vgg-16", "resnet-50", "resnet-lite"])
def test_bf16_training_step_is_finite_and_matches_fp32(net: str, size: int) -> None:
    torch.manual_seed(0)
    model = SSD(SSDConfig(net, NUM_CLASSES, size)).to(DEVICE)
    batch = _batch(model.anchors.cpu(), size, 4 if DEVICE.type == "cuda" else 2)
    model.train()
    loss, grads = _loss_and_grad(model, batch, bf16=True, channels_last=True)
    assert torch.isfinite(loss) and bool(torch.isfinite(grads).all()), (net, size, loss)
    model.eval()
    with torch.backends.cudnn.flags(enabled=True, benchmark=False, allow_tf32=False):
        ref, ref_grads = _loss_and_grad(model, batch, bf16=False, channels_last=False)
    loss, grads = _loss_and_grad(model, batch, bf16=True, channels_last=True)
    assert torch.isfinite(loss) and bool(torch.isfinite(grads).all()), (net, size, loss)
    relative = float((loss - ref).abs() / ref.abs())
    assert relative <= LOSS_RTOL, f"{net} SSD{size}: bf16 loss {loss} vs fp32 {ref}"
    cosine = float(torch.nn.functional.cosine_similarity(grads, ref_grads, dim=0))
    assert cosine >= GRAD_COSINE, f"{net} SSD{size}: gradient cosine {cosine:.4f}"


def _sorted(d: ImageDetections) -> tuple[torch.Tensor, ...]:
    """Detections in a device-independent order: by label, then by falling score."""
    order = torch.argsort(d.labels.double() * 10 - d.scores.double().cpu(), stable=True)
    return d.boxes.cpu()[order], d.scores.cpu()[order], d.labels.cpu()[order]


def test_postprocess_on_the_device_equals_the_cpu() -> None:
    anchors = anchors_for(SSDConfig("vgg-16", NUM_CLASSES, 300))
    g = torch.Generator().manual_seed(3)
    cls = torch.randn(4, anchors.shape[0], NUM_CLASSES + 1, generator=g) * 3
    box = torch.randn(4, anchors.shape[0], 4, generator=g) * 0.5
    on_device = postprocess(cls.to(DEVICE), box.to(DEVICE), anchors.to(DEVICE))
    on_cpu = postprocess(cls, box, anchors)
    assert len(on_device) == len(on_cpu) == 4
    for dev, cpu in zip(on_device, on_cpu, strict=True):
        assert dev.boxes.device.type == DEVICE.type
        assert 0 < len(cpu.scores) == len(dev.scores)
        d_boxes, d_scores, d_labels = _sorted(dev)
        c_boxes, c_scores, c_labels = _sorted(cpu)
        assert torch.equal(d_labels, c_labels)
        torch.testing.assert_close(d_scores, c_scores, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(d_boxes, c_boxes, rtol=1e-5, atol=1e-3)


LOAD_ON_CPU = """
import sys, torch
from sdod.hyperparameters import parse_hyperparameters
from sdod.model.ssd import SSD, SSDConfig
from sdod.train import checkpoint
from sdod.train.optim import make_optimizer
assert not torch.cuda.is_available()
saved = checkpoint.load(__import__("pathlib").Path(sys.argv[1]))
model = SSD(SSDConfig("resnet-lite", 3, 300))
model.load_state_dict(saved.model)
hp = parse_hyperparameters({"num_classes": 3, "num_training_samples": 8})
opt = make_optimizer(model, hp)
opt.load_state_dict(saved.optimizer)  # momentum written on the device
total = float(sum(p.double().sum() for p in model.state_dict().values()))
for p in model.parameters():
    p.grad = torch.zeros_like(p)
opt.step()  # a resumed job steps on with it, here on the CPU
print(saved.epoch, total)
"""


def test_a_checkpoint_written_on_the_device_loads_on_a_cpu(tmp_path: Path) -> None:
    from sdod.hyperparameters import parse_hyperparameters
    from sdod.train import checkpoint
    from sdod.train.optim import make_optimizer
    from sdod.train.result import FitResult

    torch.manual_seed(0)
    model = SSD(SSDConfig("resnet-lite", NUM_CLASSES, 300)).to(DEVICE).train()
    hp = parse_hyperparameters({"num_classes": NUM_CLASSES, "num_training_samples": 8})
    opt = make_optimizer(model, hp)
    batch = _batch(model.anchors.cpu(), 300, 2)
    _loss_and_grad(model, batch, bf16=DEVICE.type == "cuda", channels_last=True)
    opt.step()  # momentum buffers on the device
    path = checkpoint.save(
        tmp_path / checkpoint.NAME,
        checkpoint.Checkpoint(
            model.state_dict(), opt.state_dict(), FitResult(1), torch.get_rng_state()
        ),
    )
    path_entries = [str(REPO), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": os.pathsep.join(path_entries)}
    command = [sys.executable, "-c", LOAD_ON_CPU, str(path)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    epoch, total = done.stdout.split()
    expected = float(sum(t.double().sum() for t in model.state_dict().values()))
    assert int(epoch) == 1
    assert float(total) == pytest.approx(expected, rel=1e-9)
