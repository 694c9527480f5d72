"""CPU time per message spent in the pipeline itself (dedupe, routing, storage), the LLM excluded.

The LLM port is a stub that answers at once, so what is measured is our code plus SQLAlchemy and
the database driver. Run: python -m benchmarks.pipeline_cpu [--messages 300] [--database-url URL]
(a PostgreSQL URL gets a throwaway schema, dropped afterwards)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks._serve import throwaway_schema
from bot.config import load_config
from bot.domain import InboundMessage
from bot.llm.base import LLMRequest, LLMResponse, Usage
from bot.local_chat import LocalChat
from bot.observability import configure_logging
from bot.runtime import build_runtime
from bot.settings import Settings

TEXTS = [
    "how do I reset my password, the link expired",
    "can I add five more seats to our team plan?",
    "where is my order? it was due yesterday",
    "the export button does nothing in Firefox",
    "hi there, quick question about your opening hours",
]


class InstantLLM:
    """Answers every request at once with a fixed reply, so the LLM costs (almost) nothing."""

    provider = "instant"

    async def complete(self, request: LLMRequest) -> LLMResponse:
        tool_input = None
        if request.tool is not None:
            tool_input = {"verdict": "reply", "draft": "Fine.", "reason": "ok", "route": "general",
                          "confidence": 0.9, "best": 0, "summary": "s", "themes": [], "urgency": "normal"}
        return LLMResponse(text="Here is what to do: open Settings.", model=request.model, provider=self.provider,
                           tool_input=tool_input, usage=Usage(10, 10))


async def measure(database_url: str, messages: int) -> dict[str, float]:
    async with throwaway_schema(database_url) as url:
        assert url is not None
        return await _measure(url, messages)


async def _measure(database_url: str, messages: int) -> dict[str, float]:
    configure_logging("WARNING")
    config = load_config()
    runtime = await build_runtime(Settings(database_url=database_url), config, chat=LocalChat(), llm=InstantLLM(),
                                  instance_id="bench")
    try:
        for warmup in range(20):
            await runtime.pipeline.handle(_message(10_000 + warmup))
        per_message: list[float] = []
        wall_started = time.perf_counter()
        cpu_started = time.process_time()
        for n in range(messages):
            started = time.process_time()
            await runtime.pipeline.handle(_message(n))
            per_message.append((time.process_time() - started) * 1000)
        cpu_total = time.process_time() - cpu_started
        wall_total = time.perf_counter() - wall_started
    finally:
        await runtime.close()
    per_message.sort()
    return {
        "messages": messages,
        "cpu_ms_per_message_mean": cpu_total * 1000 / messages,
        "cpu_ms_per_message_p50": statistics.median(per_message),
        "cpu_ms_per_message_p99": per_message[int(len(per_message) * 0.99) - 1],
        "wall_ms_per_message": wall_total * 1000 / messages,
    }


def _message(n: int) -> InboundMessage:
    return InboundMessage(source="slack", team="TBENCH", channel="CBENCH", user="UBENCH", text=TEXTS[n % len(TEXTS)],
                          ts=f"1700000000.{n:06d}", event_id=f"EvBench{n}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        result = asyncio.run(measure(url, args.messages))
    if args.json:
        print(json.dumps(result))
        return
    backend = url.split(":")[0]
    print(f"pipeline CPU per message (LLM excluded), {result['messages']} messages, routing+storage on {backend}")
    for key, value in result.items():
        if key != "messages":
            print(f"  {key:28s} {value:8.2f}")


if __name__ == "__main__":
    main()
