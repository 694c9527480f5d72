"""Streamed answers: time to the first visible words and to the complete answer, streamed vs not, and Slack calls.

A real `supportbot serve` (HTTP mode, SQLite) answers questions one at a time through the fake Slack Web API
(on a thread of this process, which timestamps every call it receives) and the fake Anthropic API (in a
process of its own) writing at a realistic pace: the first token after `--first-token` seconds, then
`--tokens-per-s`. Each question is measured from the moment its signed event is sent:

- first words: the first Slack call that shows text in the thread (chat.startStream when streamed,
  chat.postMessage when not);
- complete: the call that completes the answer (chat.stopStream, or the same chat.postMessage);
- Slack calls per answer, and the shortest gap between two calls of one stream.

    .venv/bin/python -m benchmarks.streaming              # table
    .venv/bin/python -m benchmarks.streaming --json       # one JSON object
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

from benchmarks._fake_anthropic import DUMMY_KEY, fake_process
from benchmarks._serve import CHANNEL, FakeSlackThread, fake_slack, seed_messages, send_events, serve_process

STREAM_METHODS = ("chat.startStream", "chat.appendStream", "chat.stopStream")
# About 150 tokens: three seconds of writing at 50 tokens a second.
ANSWER = (
    "Sorry about the trouble with uploads. Files over 100 MB go through the desktop app, which sends them in "
    "parts: open it, drag the file in, and a dropped connection resumes where it stopped. In the browser the "
    "limit is 100 MB per file. If the desktop app also fails, send me the time of the attempt and the file's "
    "size, and I'll look at the upload log for your workspace. Meanwhile, zipping the folder first usually "
    "brings it under the limit, and a wired connection avoids the timeouts that cut long uploads."
)


def _thread_calls(slack: FakeSlackThread, thread_ts: str) -> list[Any]:
    """The calls that put the bot's answer into this thread, in arrival order."""
    def collect() -> list[Any]:
        calls = [c for c in slack.fake.calls if c.ok and c.method == "chat.postMessage"
                 and c.params.get("thread_ts") == thread_ts]
        stream_ts = {str(c.response["ts"]) for c in slack.fake.calls if c.ok and c.method == "chat.startStream"
                     and c.params.get("thread_ts") == thread_ts and c.response}
        calls += [c for c in slack.fake.calls if c.method in STREAM_METHODS and (
            c.params.get("thread_ts") == thread_ts or str(c.params.get("ts")) in stream_ts)]
        return sorted(calls, key=lambda c: c.at)

    result: list[Any] = slack.call(collect)
    return result


async def _measure_one(slack: FakeSlackThread, url: str, index: int, timeout_s: float) -> dict[str, Any]:
    [(ts, text)] = seed_messages(slack, 1, first=index)
    sent = time.monotonic()
    await send_events(url, [(ts, text)], senders=1)
    deadline = sent + timeout_s
    while time.monotonic() < deadline:
        calls = _thread_calls(slack, ts)
        done = [c for c in calls if c.method in ("chat.stopStream", "chat.postMessage")]
        if done:
            shown = [c for c in calls if c.method in ("chat.startStream", "chat.postMessage")]
            stream = [c.at for c in calls if c.method in STREAM_METHODS]
            gaps = [b - a for a, b in zip(stream, stream[1:], strict=False)]
            return {"first_words_s": shown[0].at - sent, "complete_s": done[0].at - sent, "calls": len(calls),
                    "min_gap_s": min(gaps) if gaps else None, "streamed": bool(stream)}
        await asyncio.sleep(0.01)
    raise RuntimeError(f"no answer to message {index} within {timeout_s:.0f} s")


async def _run_mode(slack: FakeSlackThread, anthropic_url: str, *, streaming: bool, questions: int,
                    first: int) -> list[dict[str, Any]]:
    with serve_process(slack_api_url=slack.fake.url, anthropic_url=anthropic_url, anthropic_key=DUMMY_KEY,
                       max_concurrency=4, streaming=streaming, log_level="WARNING") as server:
        # One question first to warm the process up (connections, first imports); it is not counted.
        await _measure_one(slack, server.url, first, 60)
        return [await _measure_one(slack, server.url, first + 1 + i, 60) for i in range(questions)]


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    gaps = [r["min_gap_s"] for r in rows if r["min_gap_s"] is not None]
    return {
        "answers": len(rows),
        "streamed": sum(r["streamed"] for r in rows),
        "first_words_p50_s": statistics.median(r["first_words_s"] for r in rows),
        "first_words_max_s": max(r["first_words_s"] for r in rows),
        "complete_p50_s": statistics.median(r["complete_s"] for r in rows),
        "slack_calls_per_answer": statistics.mean(r["calls"] for r in rows),
        "min_gap_between_stream_calls_s": min(gaps) if gaps else None,
    }


async def measure(*, questions: int, first_token_s: float, tokens_per_s: float) -> dict[str, Any]:
    with fake_slack() as slack, fake_process(latency_s=0.0, tools={}, first_token_s=first_token_s,
                                             tokens_per_s=tokens_per_s, answer=ANSWER) as anthropic:
        streamed = _summary(await _run_mode(slack, anthropic.url, streaming=True, questions=questions, first=0))
        plain = _summary(await _run_mode(slack, anthropic.url, streaming=False, questions=questions, first=100))
    return {
        "questions": questions, "first_token_s": first_token_s, "tokens_per_s": tokens_per_s,
        "answer_chars": len(ANSWER), "channel": CHANNEL, "streamed": streamed, "unstreamed": plain,
        "goal_first_words_s": 1.5, "goal_min_gap_s": 1.0,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=5, help="measured questions per mode (default 5)")
    parser.add_argument("--first-token", type=float, default=0.8, help="seconds to Claude's first token")
    parser.add_argument("--tokens-per-s", type=float, default=50.0, help="Claude's pace after the first token")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    report = asyncio.run(measure(questions=args.questions, first_token_s=args.first_token,
                                 tokens_per_s=args.tokens_per_s))
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"Claude: first token at {args.first_token:g} s, then {args.tokens_per_s:g} tokens/s; "
          f"{report['answer_chars']} characters an answer; {args.questions} questions per mode")
    for mode in ("streamed", "unstreamed"):
        r = report[mode]
        gap = r["min_gap_between_stream_calls_s"]
        print(f"{mode:>10}: first words p50 {r['first_words_p50_s']:.2f} s (max {r['first_words_max_s']:.2f}), "
              f"complete p50 {r['complete_p50_s']:.2f} s, {r['slack_calls_per_answer']:.1f} Slack calls/answer"
              + (f", shortest gap between stream calls {gap:.2f} s" if gap is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
