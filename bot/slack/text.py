"""Slack message markup to the plain text a person reads; the pipeline escapes again on the way out."""

from __future__ import annotations

import re

_ANGLE = re.compile(r"<([^<>\n]+)>")
_BROADCAST = re.compile(r"<!(here|channel|everyone)(?:\|[^>]*)?>")
_USERGROUP = re.compile(r"<!subteam\^([A-Z0-9]+)(?:\|@?([^>]*))?>")
# What no database column stores: NUL (PostgreSQL refuses it) and lone UTF-16 surrogates (half an emoji,
# a JSON escape like \ud83d alone; no UTF-8 encoder takes them). A message holding one was acked but could
# never be processed. Control characters other than tab and newlines go too; surrogates become U+FFFD.
_UNSTORABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def strip_mention(text: str, bot_user_id: str | None) -> str:
    """Remove `<@UBOT>` (the bot addressed by name) and the space around it."""
    if not bot_user_id:
        return text.strip()
    return re.sub(rf"[ \t]*<@{re.escape(bot_user_id)}(?:\|[^>]*)?>[ \t]*", " ", text).strip()


def to_plain_text(text: str, *, bot_user_id: str | None = None) -> str:
    """`<@U1|ann>` -> `@ann`, `<!here>` -> `@here`, `<#C1|general>` -> `#general`, links -> `label (url)`,
    then Slack's three entities decoded. The bot's own mention is removed."""

    def readable(match: re.Match[str]) -> str:
        target, _, label = match.group(1).partition("|")
        if target.startswith("@"):
            return "@" + (label or target[1:])
        if target.startswith("#"):
            return "#" + (label or target[1:])
        if target.startswith("!"):
            special = target[1:]
            if special.startswith("subteam^"):
                return "@" + (label.lstrip("@") or special.removeprefix("subteam^"))
            if special.startswith("date^"):
                return label
            return "@" + (label.lstrip("@") or special)
        if target.startswith("mailto:"):
            return label or target.removeprefix("mailto:")
        return f"{label} ({target})" if label and label != target else target

    plain = _ANGLE.sub(readable, strip_mention(text, bot_user_id))
    plain = _UNSTORABLE.sub(lambda m: "\ufffd" if m.group() >= "\ud800" else "", plain)
    return plain.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").strip()


def without_pings(mrkdwn: str) -> str:
    """Turn `<!here>`, `<!channel>`, `<!everyone>` and usergroup mentions into text that notifies nobody.

    Replies to users never ping groups; the pipeline already escapes echoed text, this is the last guard."""
    mrkdwn = _BROADCAST.sub(lambda m: "@\u2060" + m.group(1), mrkdwn)
    return _USERGROUP.sub(lambda m: "@\u2060" + (m.group(2) or m.group(1)), mrkdwn)
