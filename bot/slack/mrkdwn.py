"""Markdown from the model to Slack mrkdwn, with mass mentions defused and the size kept in bounds."""

from __future__ import annotations

import re

# Slack truncates `text` past 40,000 characters and a section block holds 3,000; stay well inside.
MAX_REPLY_CHARS = 3_500
TRUNCATION_NOTE = "\n…_(reply shortened to fit in Slack)_"

_FENCE = re.compile(r"```.*?```", re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^)\s]+)\)")
_BOLD = re.compile(r"\*\*(.+?)\*\*|__(.+?)__")
_ITALIC = re.compile(r"(?<![*\w])\*(?!\s)([^*\n]+?)(?<!\s)\*(?![*\w])")
_STRIKE = re.compile(r"~~(.+?)~~")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_BULLET = re.compile(r"^(\s*)[-*+]\s+", re.MULTILINE)
_AT_WORD = re.compile(r"@(channel|here|everyone)\b", re.I)


def escape(text: str) -> str:
    """Escape untrusted text for mrkdwn so it cannot form links, mentions or pings."""
    return defuse_mentions(text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))


def defuse_mentions(text: str) -> str:
    """Keep a bare @channel/@here/@everyone from pinging (escaping already broke <!here> forms)."""
    # A word joiner keeps "@channel" readable but stops Slack from treating it as a ping.
    return _AT_WORD.sub(lambda m: "@\u2060" + m.group(1), text)


def to_mrkdwn(markdown: str) -> str:
    """Convert common Markdown to Slack mrkdwn, leaving code untouched, then bound the size."""
    protected: list[str] = []

    def keep(match: re.Match[str]) -> str:
        protected.append(match.group(0))
        return f"\x00{len(protected) - 1}\x00"

    # Slack reads <...> even inside code, so everything is escaped before code is set aside.
    text = markdown.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _FENCE.sub(keep, text)
    text = _INLINE_CODE.sub(keep, text)
    text = _LINK.sub(lambda m: f"<{m.group(2)}|{m.group(1)}>", text)
    text = _HEADING.sub(lambda m: f"\x01{m.group(1)}\x01", text)
    text = _ITALIC.sub(lambda m: f"_{m.group(1)}_", text)
    text = _BOLD.sub(lambda m: f"\x01{m.group(1) or m.group(2)}\x01", text)
    text = _STRIKE.sub(lambda m: f"~{m.group(1)}~", text)
    text = _BULLET.sub(lambda m: f"{m.group(1)}• ", text)
    text = text.replace("\x01", "*")
    text = re.sub(r"\x00(\d+)\x00", lambda m: protected[int(m.group(1))], text)
    return truncate(defuse_mentions(text.strip()))


def truncate(text: str, limit: int = MAX_REPLY_CHARS) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - len(TRUNCATION_NOTE)]
    # Prefer to end on a paragraph or line, and never leave a code fence open.
    for boundary in ("\n\n", "\n"):
        index = cut.rfind(boundary)
        if index > limit // 2:
            cut = cut[:index]
            break
    if cut.count("```") % 2:
        cut += "\n```"
    return cut.rstrip() + TRUNCATION_NOTE
