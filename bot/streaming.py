"""A streamed answer: the model's text reaches the thread while it is written, and ends as one complete answer.

The streamer is the model's `TextSink`. The first words start the stream; later text is appended at most
once per interval (Slack rate-limits the stream methods), and `finish` ends it with the whole answer, its
sources and buttons. When something goes wrong the thread still ends with exactly one complete answer:

- the stream cannot start (an old workspace, a missing scope, an error): nothing is shown yet, and the
  answer is posted whole afterwards (`started` is False);
- an append fails (the stream expired, Slack is down, the answer was lost): the streamer stops appending,
  and `finish` replaces the message with the answer;
- the model's attempt fails mid-way and is retried or handed to the fallback model (`restart`), or fails
  for good: the text shown so far is not a prefix of the final answer, so `finish` replaces it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from bot.clock import Clock, SystemClock
from bot.domain import Answer, InboundMessage, PostedMessage
from bot.errors import TransportError
from bot.ports import ChatPort

log = structlog.get_logger(__name__)


class AnswerStreamer:
    """Streams one answer into the thread of `msg`; `on_start` records the stream before anything else."""

    def __init__(
        self, chat: ChatPort, msg: InboundMessage, *, interval_s: float,
        on_start: Callable[[PostedMessage], Awaitable[None]], clock: Clock | None = None,
    ) -> None:
        """`clock` paces the calls; Slack counts its rate limits in real seconds, so by default it is the
        system clock, whatever clock the rest of the bot runs on."""
        self._chat = chat
        self._msg = msg
        self._clock = clock or SystemClock()
        self._interval_s = interval_s
        self._on_start = on_start
        # The current attempt's text, and what the thread shows (None once that is unknown).
        self._text = ""
        self._shown: str | None = ""
        self._stream: PostedMessage | None = None
        self._refused = False
        self._appending = True
        self._last_call = 0.0
        self.calls = 0

    @property
    def started(self) -> bool:
        return self._stream is not None

    async def write(self, delta: str) -> None:
        self._text += delta
        if self._refused or not self._appending or not self._whole_words().strip():
            return
        if self._stream is None:
            await self._start()
        elif self._clock.monotonic() - self._last_call >= self._interval_s:
            await self._append()

    def _whole_words(self) -> str:
        """The text up to its last whitespace: a word (or a mention, a link, `@channel`) is never cut in two
        across calls, so the adapter sees each one whole."""
        cut = max(self._text.rfind(" "), self._text.rfind("\n"))
        return self._text[:cut + 1] if cut >= 0 else ""

    async def restart(self) -> None:
        self._text = ""

    async def finish(self, answer: Answer) -> PostedMessage | None:
        """End the stream with `answer`; None when it never started (the caller posts the answer whole)."""
        if self._stream is None:
            return None
        # The last call keeps the pace too: a stream's calls reach Slack at least an interval apart.
        wait = self._interval_s - (self._clock.monotonic() - self._last_call)
        if wait > 0:
            await self._clock.sleep(wait)
        self.calls += 1
        return await self._chat.finish_stream(self._msg, self._stream, answer, shown=self._shown)

    async def _start(self) -> None:
        words = self._whole_words()
        try:
            stream = await self._chat.start_stream(self._msg, words)
        except TransportError as exc:
            # Nothing is shown: the answer is posted whole once it is written.
            log.info("stream_refused", code=exc.code, error=str(exc))
            self._refused = True
            return
        finally:
            self.calls += 1
            self._last_call = self._clock.monotonic()
        self._stream = stream
        self._shown = words
        await self._on_start(stream)

    async def _append(self) -> None:
        assert self._stream is not None
        shown = self._shown or ""
        words = self._whole_words()
        if not words.startswith(shown):
            # A restarted attempt no longer continues what the thread shows: stay put until `finish`.
            self._appending = False
            return
        pending = words[len(shown):]
        if not pending.strip():
            return
        self.calls += 1
        try:
            await self._chat.append_stream(self._stream, pending)
        except TransportError as exc:
            # Expired, refused, or lost on the way: whether it reached the thread is unknown, so nothing more
            # is appended and `finish` replaces the message with the whole answer.
            log.info("stream_append_stopped", code=exc.code, error=str(exc))
            self._appending = False
            self._shown = None
            return
        finally:
            # Counted from the answer, so calls reach Slack at least an interval apart.
            self._last_call = self._clock.monotonic()
        self._shown = shown + pending
