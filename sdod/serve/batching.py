"""Dynamic batching: prepared images from many requests, one forward pass.

Requests put their prepared image in a bounded queue and wait. One task takes the oldest
images, up to `max_batch`, waiting at most `max_delay_ms` after the oldest arrived for
company (none when the queue already holds a batch, or the model was busy meanwhile),
runs `Predictor.forward_many` on one thread beside the event loop, and hands each request
its own answer. The queue is bounded twice: more than `max_queue` images waiting is
refused at once (`Busy`, a 503 with Retry-After), and an image not taken into a batch
within `queue_timeout` seconds is withdrawn and refused the same way; one taken is always
answered.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

from sdod.serve.options import ServeOptions
from sdod.serve.predictor import Predictor

log = logging.getLogger("sdod.serve")


class Busy(Exception):
    """The server cannot take this image now; the client should retry later."""


@dataclass
class _Item:
    image: torch.Tensor
    options: tuple[float, int | None]
    future: asyncio.Future[dict[str, Any]]
    arrived: float = field(default_factory=time.monotonic)
    taken: bool = False


class Batcher:
    """Collects prepared images into batches for `predictor` (start it inside the event
    loop that calls `submit`). `observe(batch_size, seconds, queue_depth)` is told of each
    batch, `depth(queue_depth)` of each change in the queue."""

    def __init__(
        self,
        predictor: Predictor,
        options: ServeOptions,
        observe: Callable[[int, float], None] = lambda n, s: None,
        depth: Callable[[int], None] = lambda n: None,
    ) -> None:
        self.predictor, self.options = predictor, options
        self.observe, self.depth = observe, depth
        self.queue: collections.deque[_Item] = collections.deque()
        self.arrived = asyncio.Event()
        self.model = ThreadPoolExecutor(1, thread_name_prefix="sdod-model")
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())
        self.task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """The loop ends only when stopped; if a bug ends it, say so and refuse at once
        (`alive` turns `/ping` and readiness to 503)."""
        if not task.cancelled() and task.exception() is not None:
            log.error("sdod serve: the batcher stopped", exc_info=task.exception())

    @property
    def alive(self) -> bool:
        return self.task is not None and not self.task.done()

    async def stop(self) -> None:
        """After the server drained: the loop ends, waiting images are refused."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        for item in self.queue:
            if not item.future.done():
                item.future.set_exception(Busy("the server is shutting down"))
        self.queue.clear()
        self.model.shutdown(wait=True)

    async def submit(self, image: torch.Tensor, score_threshold: float, top_k: int | None) -> Any:
        """The SageMaker response for one prepared `[1, 3, S, S]` image; `Busy` when the queue
        is full or the image waited `queue_timeout` without being taken."""
        limit = self.options.max_queue
        if not self.alive:
            raise Busy("the model is not running")
        if len(self.queue) >= limit:
            raise Busy(f"{limit} images are already waiting for the model")
        item = _Item(image, (score_threshold, top_k), asyncio.get_running_loop().create_future())
        self.queue.append(item)
        self.depth(len(self.queue))
        self.arrived.set()
        wait = self.options.queue_timeout
        try:
            return await asyncio.wait_for(asyncio.shield(item.future), wait)
        except TimeoutError:
            if item.taken:  # in a batch now: its answer is coming
                return await item.future
            self.queue.remove(item)
            self.depth(len(self.queue))
            raise Busy(f"the image waited {wait:g} s for the model") from None

    async def _run(self) -> None:
        while True:
            while not self.queue:
                self.arrived.clear()
                await self.arrived.wait()
            await self._gather()
            size = min(self.options.max_batch, len(self.queue))
            batch = [self.queue.popleft() for _ in range(size)]
            self.depth(len(self.queue))
            for item in batch:
                item.taken = True
            if batch:  # all of them may have timed out while the batch gathered
                await self._forward(batch)

    async def _gather(self) -> None:
        """Wait for a full batch, or until the oldest image has waited `max_delay_ms`."""
        due = self.queue[0].arrived + self.options.max_delay_ms / 1000
        while len(self.queue) < self.options.max_batch:
            left = due - time.monotonic()
            if left <= 0:
                return
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), left)
            except TimeoutError:
                return

    async def _forward(self, batch: list[_Item]) -> None:
        started = time.monotonic()
        options = [item.options for item in batch]
        loop = asyncio.get_running_loop()
        try:
            images = torch.cat([item.image for item in batch])
            answers = await loop.run_in_executor(
                self.model, self.predictor.forward_many, images, options
            )
        except Exception as exc:  # a bug: every request of the batch gets it (a 500)
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        self.observe(len(batch), time.monotonic() - started)
        for item, answer in zip(batch, answers, strict=True):
            if not item.future.done():
                item.future.set_result(answer)
