"""Runs pipeline work after the ack with bounded concurrency, recovers leftovers, and drains on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

import structlog

from bot.clock import Clock
from bot.metrics import Metrics
from bot.pipeline import Pipeline
from storage import repositories as repo

log = structlog.get_logger(__name__)

RECOVERY_INTERVAL_S = 15.0
SWEEP_INTERVAL_S = 15.0


class Dispatcher:
    """Accepted inbox ids go in; at most `concurrency` messages are processed at once."""

    def __init__(self, pipeline: Pipeline, *, concurrency: int, metrics: Metrics, clock: Clock) -> None:
        self._pipeline = pipeline
        self._semaphore = asyncio.Semaphore(concurrency)
        self._metrics = metrics
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._closing = False

    def submit(self, inbox_id: int) -> None:
        if self._closing:
            # Left pending in the inbox: the next start (or another replica) picks it up.
            return
        task = asyncio.create_task(self._run(inbox_id), name=f"message-{inbox_id}")
        self._tasks.add(task)
        self._metrics.queue_depth.set(len(self._tasks))
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._metrics.queue_depth.set(len(self._tasks))

    async def _run(self, inbox_id: int) -> None:
        async with self._semaphore:
            try:
                await self._pipeline.process(inbox_id)
            except Exception:
                log.exception("dispatch_failed", inbox_id=inbox_id)

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def start_background(self, *, sweeps: Sequence[Callable[[], Awaitable[int]]] = (),
                         recovery_interval_s: float = RECOVERY_INTERVAL_S,
                         sweep_interval_s: float = SWEEP_INTERVAL_S) -> None:
        """Periodic recovery of unfinished inbox rows (crashes, lapsed leases), and each sweep (escalations,
        SLA clocks) in a loop of its own."""
        self._loops.append(asyncio.create_task(self._every(recovery_interval_s, self.recover), name="recovery"))
        for sweep in sweeps:
            name = getattr(sweep, "__name__", "sweep")
            self._loops.append(asyncio.create_task(self._every(sweep_interval_s, sweep), name=name))

    async def recover(self) -> int:
        async with self._pipeline.db.sessions() as session:
            ids = await repo.claimable_inbound(session, now=self._clock.now())
        running = {task.get_name() for task in self._tasks}
        fresh = [inbox_id for inbox_id in ids if f"message-{inbox_id}" not in running]
        for inbox_id in fresh:
            self.submit(inbox_id)
        if fresh:
            log.info("inbox_recovered", count=len(fresh))
        return len(fresh)

    async def _every(self, interval_s: float, job: Callable[[], Awaitable[int]]) -> None:
        name = getattr(job, "__name__", "job")
        while True:
            try:
                await job()
            except Exception:
                log.exception("background_job_failed", job=name)
            # Counted either way: an operator (or a test) can see the passes go by.
            self._metrics.background_passes.labels(name).inc()
            await asyncio.sleep(interval_s)

    async def drain(self, timeout_s: float) -> int:
        """Stop taking work and wait up to `timeout_s` for in-flight messages; returns how many were left."""
        self._closing = True
        for loop in self._loops:
            loop.cancel()
        for loop in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        if self._tasks:
            _, still_running = await asyncio.wait(set(self._tasks), timeout=timeout_s)
            for task in still_running:
                task.cancel()
            if still_running:
                # Their leases lapse and recovery finishes them on the next start or another replica.
                log.warning("drain_timeout", unfinished=len(still_running))
                await asyncio.gather(*still_running, return_exceptions=True)
            return len(still_running)
        return 0

    async def wait_idle(self, timeout_s: float = 10.0) -> None:
        """Wait until no message is being processed (tests and the terminal chat)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self._tasks:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"{len(self._tasks)} messages still in progress")
            await asyncio.wait(set(self._tasks), timeout=remaining)
