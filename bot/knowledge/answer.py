"""Extractive answers for the offline provider: the best passage cut down to the sentences that answer."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from bot.knowledge.text import query_terms, terms

MAX_ANSWER_CHARS = 600
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9`\"'(])")


@dataclass(frozen=True)
class ExtractiveAnswer:
    """Sentences quoted from one passage, with what to cite."""

    text: str
    title: str
    heading: str
    source: str


def _units(passage: str) -> list[str]:
    """Sentences of prose blocks; a code or listing block (several lines) stays whole."""
    units: list[str] = []
    for block in passage.split("\n\n"):
        block = block.strip()
        if not block:
            continue
        if "\n" in block:
            units.append(block)
        else:
            units.extend(part.strip() for part in _SENTENCE_END.split(block) if part.strip())
    return units


class Passage(Protocol):
    """What an extract is cut from: a search hit, or a passage given to the model."""

    @property
    def title(self) -> str: ...

    @property
    def heading(self) -> str: ...

    @property
    def source(self) -> str: ...

    @property
    def text(self) -> str: ...


def extract(question: str, hit: Passage, max_chars: int = MAX_ANSWER_CHARS) -> ExtractiveAnswer:
    """The passage's sentence sharing most of the question's words, with what follows it, up to `max_chars`."""
    wanted = {_stem(word) for word in query_terms(question)}
    units = _units(hit.text)
    if not units:
        return ExtractiveAnswer(hit.text[:max_chars], hit.title, hit.heading, hit.source)

    def overlap(unit: str) -> float:
        found = {_stem(word) for word in terms(unit)}
        # Rarer words count more, crudely: longer words tend to be the specific ones.
        return sum(1.0 + len(word) / 10 for word in wanted & found)

    best = max(range(len(units)), key=lambda i: (overlap(units[i]), -i))
    chosen = [units[best]]
    size = len(units[best])
    for unit in units[best + 1 :]:
        # A sentence that introduces an example ("run:") needs the example after it.
        if size + len(unit) + 1 > max_chars and not chosen[-1].endswith(":"):
            break
        chosen.append(unit)
        size += len(unit) + 1
        if size >= max_chars // 2 and not chosen[-1].endswith(":"):
            break
    text = _join(chosen)
    if len(text) > max_chars:
        text = text[: max_chars - 1].rsplit(" ", 1)[0] + "…"
    return ExtractiveAnswer(text=text, title=hit.title, heading=hit.heading, source=hit.source)


def _stem(word: str) -> str:
    """A crude English stem, enough to match "refund" with "refunds" or "granted" with "grant"."""
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


def _join(units: list[str]) -> str:
    out = ""
    for unit in units:
        separator = "\n\n" if "\n" in unit or (out and "\n" in out.rsplit("\n\n", 1)[-1]) else " "
        out = unit if not out else out + separator + unit
    return out
