"""The training loop: SageMaker's hyperparameters on PyTorch.

bf16 autocast and channels-last on GPU, linear warm-up, gradient clipping, validation mAP
(VOC07 at `overlap_threshold`) after every epoch, the best weights kept, SageMaker's metric
lines, and a stop check at every step boundary (StoppingCondition).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader

from sdod.data.dataset import DetectionDataset
from sdod.data.sample import Sample
from sdod.evaluate.detect import detect, ground_truth
from sdod.evaluate.voc import BoxTable, voc_map
from sdod.faults import pause_point
from sdod.hyperparameters import Hyperparameters
from sdod.model.loss import multibox_loss
from sdod.model.ssd import SSD
from sdod.train import metrics
from sdod.train.distributed import GlobalBatchSampler, World
from sdod.train.optim import Schedule, make_optimizer
from sdod.train.result import FitResult
from sdod.train.stopping import (
    StopFlag,
    end_workers_at_exit,
    ignore_stop_signals,
    iter_with_stop_signals_blocked,
)

GRAD_CLIP_NORM = 20.0
MAX_WARMUP_ITERS = 300
LOG_EVERY = 20


def epochs_without_improvement(history: list[dict], tolerance: float) -> int:
    """Trailing epochs whose validation mAP improved on the best before them by no more
    than `tolerance`, relative (SageMaker's early_stopping_tolerance: (mAP - best) / best)."""
    best, stale = None, 0
    for entry in history:
        score = entry.get("validation:mAP")
        if score is None:
            continue
        if best is None:
            gain = float("inf")
        elif best > 0:
            gain = (score - best) / best
        else:
            gain = float("inf") if score > best else 0.0
        stale = 0 if gain > tolerance else stale + 1
        best = score if best is None else max(best, score)
    return stale


def early_stop_due(hp: Hyperparameters, result: FitResult) -> bool:
    """After `early_stopping_min_epochs`, `early_stopping_patience` epochs in a row without
    a relative improvement above `early_stopping_tolerance`."""
    return (
        hp.early_stopping
        and result.epochs_completed >= hp.early_stopping_min_epochs
        and epochs_without_improvement(result.history, hp.early_stopping_tolerance)
        >= hp.early_stopping_patience
    )


@dataclass(frozen=True)
class FitOptions:
    device: torch.device
    workers: int = 2
    seed: int = 0
    start_epoch: int = 0
    resume: FitResult | None = None  # best-so-far and history from a checkpoint
    on_epoch_end: Callable[[int, SSD, torch.optim.Optimizer, FitResult], None] | None = None
    world: World = field(default_factory=World)  # this process's place (DDP under torchrun)


def _loader(
    samples: list[Sample], model: SSD, hp: Hyperparameters, batch: int, opts: FitOptions
) -> tuple[DataLoader, GlobalBatchSampler]:
    anchors = model.anchors.cpu()
    dataset = DetectionDataset(
        samples,
        image_size=hp.image_shape,
        anchors=anchors,
        train=True,
        augmentation=hp.augmentation,
    )
    sampler = GlobalBatchSampler(len(samples), batch, opts.world, opts.seed)
    if opts.workers > 0:
        end_workers_at_exit()
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=opts.workers,
        pin_memory=opts.device.type == "cuda",
        persistent_workers=opts.workers > 0,
        worker_init_fn=ignore_stop_signals,
    )
    return loader, sampler


def _check_finite(loss: float, epoch: int, batch: int, hp: Hyperparameters) -> None:
    """A diverged run fails at once, saying so, instead of training on NaN to the end."""
    if loss != loss or loss in (float("inf"), float("-inf")):
        from sdod.errors import UserError

        raise UserError(
            f"training diverged: the loss is {loss} at epoch {epoch}, batch {batch} "
            f"(learning_rate={hp.learning_rate}, optimizer={hp.optimizer}); lower the "
            "learning rate (or clip it in the tuning ranges)"
        )


def _parallel(model: SSD, world: World, device: torch.device) -> torch.nn.Module:
    """The module to train: DDP over the world (BatchNorm synchronised on GPUs, so
    statistics are those of the global batch), or the model itself in a world of one."""
    if world.size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[device.index])
    return DistributedDataParallel(model)


@dataclass
class _Epochs:
    """One fit's moving parts: the loader, the optimiser and its schedule, the validation
    ground truth; `train_epoch` and `validate` run one epoch's halves."""

    model: SSD
    net: torch.nn.Module  # the model, or its DDP wrapper
    hp: Hyperparameters
    validation: list[Sample]
    loader: DataLoader
    sampler: GlobalBatchSampler
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    stop: StopFlag
    opts: FitOptions
    log: Callable[[str], None]
    gt: BoxTable | None

    def should_stop(self) -> bool:  # agreed by every rank, so all stop at the same step
        return self.opts.world.any(self.stop.is_set(), self.opts.device)

    def train_epoch(self, epoch: int) -> bool:
        """One pass over the training data; False when stopped part-way."""
        self.model.train()
        self.sampler.set_epoch(epoch)
        started, seen, iters = time.perf_counter(), 0, len(self.loader)
        for b, (images, cls_t, box_t) in enumerate(iter_with_stop_signals_blocked(self.loader)):
            if self.should_stop():
                return False
            for group in self.optimizer.param_groups:
                group["lr"] = self.schedule(epoch * iters + b)
            ce_t, l1_t = self._step(images, cls_t, box_t)
            seen += images.shape[0] * self.opts.world.size
            if b % LOG_EVERY == 0 or b == iters - 1:  # the step's only reads from the GPU
                ce, l1 = ce_t.item(), l1_t.item()
                _check_finite(ce + l1, epoch, b, self.hp)
                self.log(metrics.train_loss_line(epoch, b, "cross_entropy", round(ce, 6)))
                self.log(metrics.train_loss_line(epoch, b, "smooth_l1", round(l1, 6)))
        if self.should_stop():
            return False
        rate = round(seen / (time.perf_counter() - started), 3)
        self.log(metrics.throughput_line(rate))
        return True

    def _step(
        self, images: torch.Tensor, cls_t: torch.Tensor, box_t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step; the two loss terms stay on the device (reading them back
        would make the host wait for the GPU at every step)."""
        device, world = self.opts.device, self.opts.world
        images = images.to(device, non_blocking=True)
        if device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            cls, box = self.net(images)
        pause_point("forward")
        cls_t = cls_t.to(device, non_blocking=True)
        normaliser = None
        if world.size > 1:  # the global positive count, so DDP's mean is the global loss
            positives = world.sum((cls_t > 0).sum().float())
            normaliser = positives.clamp(min=1) / world.size
        ce, l1 = multibox_loss(
            cls, box, cls_t, box_t.to(device, non_blocking=True), normaliser=normaliser
        )
        self.optimizer.zero_grad(set_to_none=True)
        (ce + l1).backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), GRAD_CLIP_NORM)
        self.optimizer.step()
        return ce.detach(), l1.detach()

    def validate(self, epoch: int) -> float | None:
        """Validation mAP (VOC07 at overlap_threshold); None when stopped part-way."""
        assert self.gt is not None
        hp = self.hp
        det = detect(
            self.model, self.validation, device=self.opts.device,
            nms_threshold=hp.nms_threshold, nms_topk=hp.nms_topk, should_stop=self.should_stop,
        )  # fmt: skip
        if det is None:
            return None
        found = voc_map(
            det, self.gt, num_classes=hp.num_classes, iou_threshold=hp.overlap_threshold
        )
        value = 0.0 if found.map != found.map else found.map  # NaN (no ground truth) -> 0
        self.log(metrics.validation_map_line(epoch, round(value, 6)))
        return value


def _prepare(
    model: SSD,
    hp: Hyperparameters,
    train: list[Sample],
    validation: list[Sample],
    stop: StopFlag,
    opts: FitOptions,
    optimizer: torch.optim.Optimizer | None,
    log: Callable[[str], None],
) -> _Epochs:
    device, world = opts.device, opts.world
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True  # fixed shapes: full batches of one size
    # mini_batch_size is one machine's batch, split over its processes; × machines in all
    batch = min(hp.mini_batch_size * world.machines, len(train))
    loader, sampler = _loader(train, model, hp, batch, opts)
    iters = len(loader)
    return _Epochs(
        model, _parallel(model, world, device), hp, validation, loader, sampler,
        optimizer or make_optimizer(model, hp), Schedule(hp, iters, min(MAX_WARMUP_ITERS, iters)),
        stop, opts, log, ground_truth(validation) if validation else None,
    )  # fmt: skip


def _keep_if_best(result: FitResult, entry: dict, model: SSD, validated: bool) -> None:
    result.history.append(entry)
    result.epochs_completed = entry["epoch"] + 1
    if not validated or result.best_map is None or entry["validation:mAP"] > result.best_map:
        result.best_map, result.best_epoch = entry.get("validation:mAP"), entry["epoch"]
        result.best_state = {
            k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
        }


def fit(
    model: SSD,
    hp: Hyperparameters,
    train: list[Sample],
    validation: list[Sample],
    *,
    stop: StopFlag,
    opts: FitOptions,
    optimizer: torch.optim.Optimizer | None = None,
    log: Callable[[str], None] = print,
) -> FitResult:
    """Train `model` in place for `hp.epochs` (or until `stop`); keep the best weights."""
    torch.manual_seed(opts.seed)
    run = _prepare(model, hp, train, validation, stop, opts, optimizer, log)
    result = opts.resume or FitResult(
        opts.start_epoch, best_state=copy.deepcopy(model.state_dict())
    )
    for epoch in range(opts.start_epoch, hp.epochs):
        entry: dict = {"epoch": epoch}
        completed = run.train_epoch(epoch)
        if completed and run.gt is not None:
            score = run.validate(epoch)
            completed = score is not None
            entry["validation:mAP"] = score
        if not completed:
            result.stopped, result.stop_reason = True, stop.reason or "stopped by another rank"
            break
        _keep_if_best(result, entry, model, validated=run.gt is not None)
        log(metrics.progress_line(round(100.0 * (epoch + 1) / hp.epochs, 2)))
        if opts.on_epoch_end is not None:
            opts.on_epoch_end(epoch, model, run.optimizer, result)
        if run.gt is not None and early_stop_due(hp, result):
            result.early_stopped_at = epoch
            log(
                f"early stopping after epoch {epoch}: validation mAP has not improved by more "
                f"than early_stopping_tolerance={hp.early_stopping_tolerance:g} on the best "
                f"({result.best_map:.6f} at epoch {result.best_epoch}) for "
                f"{hp.early_stopping_patience} epoch(s); keeping the best model"
            )
            break
    return result
