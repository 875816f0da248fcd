"""The single model thread of `ftune serve`: every model call is queued to it, so requests never run the
model concurrently.

/predict requests arrive already featurised (tokenised and checked in the handler, so a bad input never joins
a batch). The thread takes every request waiting when it becomes free (it never waits when nothing else is
queued; with `window_s` it waits that long for more only when others are already queued), and runs their
features grouped by exact token length: no padding inside a pass, so a request's answer is bit-identical alone
and in any batch (a row's arithmetic depends on its own length, never on its neighbours'). When a pass fails,
its requests are retried one by one, so only the request that caused the failure gets it. The queue is bounded
(in inputs): over it `submit` raises `QueueFull`.

Replies (`generate`, the OpenAI routes) have their own queue: when the model thread is free it takes every
reply waiting (up to `max_generate`) and decodes them together (`Inference.generate_batch`); replies that
arrive meanwhile join the running batch between two decoding steps while it has room, and each is answered
as soon as it is done. While replies are being decoded, other model work (`submit`, `call`) waits for the
batch to end. The queue is bounded too (`max_queue` replies waiting).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("ftune")


class QueueFull(Exception):
    """The model's queue holds `max_queue` inputs already: the request is refused (503), not queued."""


@dataclass
class Job:
    features: list[dict]  # the request's model-ready features, each with its `length`
    finish: Any  # predictions (one per feature, in order) -> the request's answer; runs on the model thread
    future: asyncio.Future
    predictions: list = field(default_factory=list)


class Batcher:
    """Joins concurrent requests into model passes on the single model thread."""

    def __init__(self, infer, max_batch: int, window_s: float, max_queue: int = 1024, threads: int | None = None,
                 generate_many=None, max_generate: int = 16):
        self.infer, self.max_batch, self.window_s, self.max_queue = infer, max_batch, window_s, max_queue
        self.generate_many, self.max_generate = generate_many, max_generate  # requests -> results or exceptions
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ftune-model",
                                           initializer=_set_threads, initargs=(threads,))
        self.queue: asyncio.Queue | None = None
        self.replies: deque = deque()  # (request, future) waiting; the model thread takes from it too
        self.reply_waiting: asyncio.Event | None = None
        self.tasks: list[asyncio.Task] = []
        self.queued = 0  # features waiting (the bound is on these)
        self.batches = 0  # model passes so far (/info shows it: batching at work)
        self.retries = 0  # failed passes retried request by request
        self.reply_batches = 0  # generation batches so far, replies that joined one running, the most at once
        self.joined = 0
        self.largest_reply_batch = 0

    def start(self) -> None:
        self.queue, self.reply_waiting, loop = asyncio.Queue(), asyncio.Event(), asyncio.get_running_loop()
        self.tasks = [loop.create_task(self._loop())]
        if self.generate_many is not None:
            self.tasks.append(loop.create_task(self._reply_loop()))

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        self.executor.shutdown(wait=True)

    async def submit(self, features: list[dict], finish) -> Any:
        """The request's answer, `finish(predictions)`; raises QueueFull at once when the queue is full, and
        the request's own failure (never a neighbour's)."""
        if self.queued + len(features) > self.max_queue:
            raise QueueFull(f"{self.queued} inputs are waiting for the model (the limit is {self.max_queue})")
        job = Job(features, finish, asyncio.get_running_loop().create_future())
        self.queued += len(features)
        self.queue.put_nowait(job)
        return await job.future

    async def call(self, function, *args):
        """Any other model call (embeddings), in turn with the batches."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)

    async def generate(self, request) -> dict:
        """A reply (a GenerationRequest), decoded together with the others; raises QueueFull at once when
        `max_queue` replies are waiting, and the request's own failure (never a neighbour's)."""
        if len(self.replies) >= self.max_queue:
            raise QueueFull(f"{len(self.replies)} replies are waiting for the model (the limit is {self.max_queue})")
        future = asyncio.get_running_loop().create_future()
        self.replies.append((request, future))
        self.reply_waiting.set()
        return await future

    def _take(self, room: int) -> list:
        """Up to `room` waiting replies whose clients still wait (on any thread: deque pops are atomic)."""
        taken = []
        while self.replies and len(taken) < room:
            request, future = self.replies.popleft()
            if not future.done():
                taken.append((request, future))
        return taken

    async def _reply_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.reply_waiting.wait()
            self.reply_waiting.clear()
            while jobs := self._take(self.max_generate):
                futures = {id(request): future for request, future in jobs}

                def more(active: int, futures=futures) -> list:  # on the model thread, between two steps
                    new = self._take(self.max_generate - active)
                    futures.update({id(request): future for request, future in new})
                    self.joined += len(new)
                    self.largest_reply_batch = max(self.largest_reply_batch, active + len(new))
                    return [request for request, _ in new]

                def done(request, result, futures=futures) -> None:  # on the model thread
                    loop.call_soon_threadsafe(_settle, futures.pop(id(request)), result)

                self.largest_reply_batch = max(self.largest_reply_batch, len(jobs))
                try:
                    await loop.run_in_executor(self.executor, self.generate_many, [r for r, _ in jobs], more, done)
                except Exception as error:  # noqa: BLE001 - never expected (generate_batch answers every request)
                    log.exception("generation batch failed")
                    for future in list(futures.values()):
                        _settle(future, error)
                self.reply_batches += 1

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self.queue.get()]
            count = len(jobs[0].features)
            while not self.queue.empty() and count < self.max_batch:
                jobs.append(self.queue.get_nowait())
                count += len(jobs[-1].features)
            if self.window_s > 0 and len(jobs) > 1:  # under load: let more join for up to the window
                deadline = loop.time() + self.window_s
                while count < self.max_batch and (left := deadline - loop.time()) > 0:
                    try:
                        jobs.append(await asyncio.wait_for(self.queue.get(), left))
                    except TimeoutError:
                        break
                    count += len(jobs[-1].features)
            self.queued -= count
            try:
                await loop.run_in_executor(self.executor, self._run, jobs)
            except Exception as error:  # noqa: BLE001 - never expected (_run answers every job); the loop goes on
                log.exception("model pass failed")
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(error)

    def _run(self, jobs: list[Job]) -> None:
        """On the model thread: passes by exact length, failed passes retried per job, each job finished."""
        groups: dict[int, list[tuple[Job, int]]] = defaultdict(list)
        for job in jobs:
            job.predictions = [None] * len(job.features)
            for number, feature in enumerate(job.features):
                groups[feature["length"]].append((job, number))
        failed: dict[int, BaseException] = {}
        for members in groups.values():
            for start in range(0, len(members), self.max_batch):
                part = [(job, n) for job, n in members[start:start + self.max_batch] if id(job) not in failed]
                self._pass(part, failed)
        for job in jobs:
            error = failed.get(id(job))
            try:
                result = job.finish(job.predictions) if error is None else error
            except Exception as finish_error:  # noqa: BLE001 - this request's failure only
                result = finish_error
            job.future.get_loop().call_soon_threadsafe(_settle, job.future, result)

    def _pass(self, part: list[tuple[Job, int]], failed: dict[int, BaseException]) -> None:
        if not part:
            return
        try:
            predictions = self.infer([job.features[n] for job, n in part])
            self.batches += 1
        except Exception as error:  # noqa: BLE001 - retried without the request that caused it
            owners = {id(job): job for job, _ in part}
            if len(owners) == 1:
                failed[next(iter(owners))] = error
                return
            self.retries += 1
            for owner in owners:
                self._pass([(job, n) for job, n in part if id(job) == owner], failed)
            return
        for (job, number), prediction in zip(part, predictions, strict=True):
            job.predictions[number] = prediction


def _set_threads(threads: int | None) -> None:
    """torch's intra-op threads, set on the model thread itself (OpenMP's setting is per thread)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def _settle(future: asyncio.Future, result: Any) -> None:
    if future.done():  # the client went away
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
