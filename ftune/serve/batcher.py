"""The single model thread of `ftune serve`: every model call is queued to it, so requests never run the
model concurrently. /predict requests that arrive within the batch window of each other are joined into one
model pass of up to `max_batch` inputs and their answers split back; generation takes requests one by one.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor


class Batcher:
    """Joins concurrent requests into model passes on the single model thread."""

    def __init__(self, run, max_batch: int, window_s: float):
        self.run, self.max_batch, self.window_s = run, max_batch, window_s
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ftune-model")
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None
        self.batches = 0  # model passes so far (/info shows it: batching at work)

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.executor.shutdown(wait=True)

    async def submit(self, items: list) -> list:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((items, future))
        return await future

    async def call(self, function, *args):
        """Any other model call (generation), in turn with the batches."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            group = [await self.queue.get()]
            count = len(group[0][0])
            deadline = loop.time() + self.window_s
            while self.window_s > 0 and count < self.max_batch:
                try:
                    group.append(await asyncio.wait_for(self.queue.get(), max(deadline - loop.time(), 0)))
                except TimeoutError:
                    break
                count += len(group[-1][0])
            flat = [item for items, _ in group for item in items]
            try:
                results = await loop.run_in_executor(self.executor, self.run, flat)
            except Exception as error:  # noqa: BLE001 - every waiting request gets the failure, the loop goes on
                for _, future in group:
                    if not future.done():
                        future.set_exception(error)
                continue
            self.batches += 1
            start = 0
            for items, future in group:
                if not future.done():
                    future.set_result(results[start:start + len(items)])
                start += len(items)
