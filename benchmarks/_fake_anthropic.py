"""The fake Anthropic API in a process of its own, so its CPU time is not billed to the bot being measured.

The real API does its work on Anthropic's machines. Run inside the measured process, the fake's
request parsing and token accounting would compete for the same event loop (or, on a thread, the
same GIL) as the bot's calls. Run as `python benchmarks/_fake_anthropic.py` it serves until stdin
closes, then prints its peak number of requests in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DUMMY_KEY = "sk-ant-dummy"


@dataclass
class FakeProcess:
    url: str
    process: subprocess.Popen[str]
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def max_in_flight(self) -> int:
        return int(self.stats.get("max_in_flight", 0))


@contextmanager
def fake_process(*, latency_s: float, tools: Mapping[str, Mapping[str, Any]], first_token_s: float = 0.0,
                 tokens_per_s: float | None = None, answer: str | None = None) -> Iterator[FakeProcess]:
    """A FakeAnthropicAPI in a child process answering each forced tool in `tools` with that input; with a pace,
    answers start after `first_token_s` and come at `tokens_per_s`; `answer` is every plain reply's text."""
    pace = ["--first-token", str(first_token_s)] + (["--tokens-per-s", str(tokens_per_s)] if tokens_per_s else [])
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__)), "--latency", str(latency_s), "--tools", json.dumps(tools), *pace,
         *(["--answer", answer] if answer else [])],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
    )
    assert process.stdout is not None and process.stdin is not None
    url = process.stdout.readline().strip()
    if not url.startswith("http://"):
        process.kill()
        raise RuntimeError(f"the fake Anthropic API did not start: {url!r}")
    fake = FakeProcess(url=url, process=process)
    try:
        yield fake
    finally:
        process.stdin.close()
        fake.stats = json.loads(process.stdout.readline() or "{}")
        process.wait(10)


async def _serve(latency_s: float, tools: Mapping[str, Mapping[str, Any]], first_token_s: float,
                 tokens_per_s: float | None, answer: str | None) -> None:
    sys.path.insert(0, str(REPO))
    from tests.fakes.anthropic_api import FakeAnthropicAPI, RecordedRequest, Reply, text

    async with FakeAnthropicAPI(api_key=DUMMY_KEY, latency_s=latency_s, first_token_s=first_token_s,
                                tokens_per_s=tokens_per_s) as fake:
        for name, tool_input in tools.items():
            fake.on_tool(name, tool_input)
        if answer:
            async def respond(request: RecordedRequest) -> Reply:
                return text(answer) if request.forced_tool is None else await fake.default_responder(request)

            fake.responder = respond
        print(fake.url, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        print(json.dumps({"max_in_flight": fake.max_in_flight, "requests": len(fake.requests)}), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="serve the fake Anthropic API until stdin closes")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--tools", default="{}", help="JSON: {tool name: tool input}")
    parser.add_argument("--first-token", type=float, default=0.0, help="seconds before an answer's first token")
    parser.add_argument("--tokens-per-s", type=float, default=None, help="pace of an answer after its first token")
    parser.add_argument("--answer", default=None, help="the text of every plain reply")
    args = parser.parse_args()
    asyncio.run(_serve(args.latency, json.loads(args.tools), args.first_token, args.tokens_per_s, args.answer))
