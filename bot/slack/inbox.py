"""Acks that arrive together share one inbox write, so each waits for one short transaction, not a queue of them.

While one batch is being written the next one gathers: a message's ack waits for at most the batch in
progress and its own, however many requests arrive at once.
"""

from __future__ import annotations

import asyncio
from typing import Final

from bot.domain import InboundMessage
from bot.pipeline import Pipeline

MAX_BATCH: Final = 200


class InboxWriter:
    def __init__(self, pipeline: Pipeline, *, max_batch: int = MAX_BATCH) -> None:
        self._pipeline = pipeline
        self._max_batch = max_batch
        self._waiting: list[tuple[InboundMessage, asyncio.Future[int | None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def accept(self, msg: InboundMessage) -> int | None:
        """`Pipeline.accept`, batched: the inbox id, or None when the message was seen before.

        Raises what the write raised (the caller answers 500 and Slack delivers the event again)."""
        future: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((msg, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_batches(), name="inbox-writer")
        return await future

    async def _write_batches(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[: self._max_batch], self._waiting[self._max_batch :]
            try:
                ids = await self._pipeline.accept_many([msg for msg, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), inbox_id in zip(batch, ids, strict=True):
                if not future.done():
                    future.set_result(inbox_id)
