"""Work started in the background and not awaited by whoever started it (a store write after
an AMI event, a callback's result): a failure is logged with what was being done, never
lost in an unretrieved task, and everything still running stops together."""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable


class Background:
    def __init__(self, log: logging.Logger, prefix: str) -> None:
        self._log = log
        self._prefix = prefix
        self._tasks: set[asyncio.Task] = set()

    def spawn(self, coro: Awaitable, what: str) -> None:
        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception as exc:   # a store or AMI hiccup must not stop the event flow
                self._log.warning("%s: %s failed: %s", self._prefix, what,
                                  exc or type(exc).__name__)
        task = asyncio.get_running_loop().create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def __len__(self) -> int:
        """Tasks still running."""
        return len(self._tasks)

    async def stop(self, *others: asyncio.Task | None) -> None:
        """Cancel every task still running, and ``others`` too, and wait for them."""
        tasks = [*self._tasks, *(task for task in others if task is not None)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
