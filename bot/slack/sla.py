"""An SLA warning as Slack shows it in the escalation channel: a headline, the thread and the deadline."""

from __future__ import annotations

from typing import Any

from bot.domain import SlaWarning
from bot.slack.pages import slack_time


def sla_warning_text(warning: SlaWarning) -> str:
    """The notification text (what a phone shows)."""
    return f":warning: {warning.title} in <#{warning.channel}>"


def sla_warning_blocks(warning: SlaWarning) -> list[dict[str, Any]]:
    link = (f"<{warning.permalink}|Open the thread>" if warning.permalink
            else f"Thread {warning.thread_ts} in <#{warning.channel}>")
    fields = [f"*Route*\n{warning.route or 'n/a'}", f"*Deadline*\n{slack_time(warning.deadline)}"]
    if warning.escalation_id is not None:
        fields.append(f"*Escalation*\n#{warning.escalation_id}")
    return [
        {"type": "section", "block_id": warning.key,
         "text": {"type": "mrkdwn", "text": f":warning: *{warning.title}*\n{link}"}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": text} for text in fields]},
    ]
