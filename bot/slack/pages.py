"""An escalation page as Slack shows it: mentions, Block Kit fields, the drafts, the link and the buttons."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bot.escalation.page import ACK_ACTION, EXPIRED_STATUS, NOBODY_ON_CALL, RESOLVE_ACTION, Audience, Page
from bot.slack.mrkdwn import escape

BUTTON_TEXT = {ACK_ACTION: ("Acknowledge", "primary"), RESOLVE_ACTION: ("Resolve", None)}


def mention(audience: Audience) -> str:
    parts = ([f"<!subteam^{audience.usergroup}>"] if audience.usergroup else []) + [
        f"<@{user}>" for user in audience.users]
    return " ".join(parts) or NOBODY_ON_CALL


def slack_time(moment: datetime | None) -> str:
    if moment is None:
        return ""
    fallback = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"


def page_text(page: Page) -> str:
    """The notification text (what a phone shows); the blocks carry the details."""
    if page.state == "paged":
        return (f"{mention(page.audience)} Escalation #{page.escalation_id}: <@{page.requester}> in <#{page.channel}> "
                f"needs a person ({page.why})")
    return f"Escalation #{page.escalation_id} ({page.state}) from <@{page.requester}> in <#{page.channel}>"


def page_blocks(page: Page) -> list[dict[str, Any]]:
    """The Block Kit page: who, what, route, confidence, reason, drafts, permalink, and the buttons."""
    confidence = "n/a" if page.confidence is None else f"{page.confidence:.2f}"
    level_text = " · *level 2* (whole group)" if page.level > 1 else ""
    fields = [
        f"*From*\n<@{page.requester}> in <#{page.channel}>",
        f"*Route*\n{page.route or 'n/a'} (confidence {confidence})",
        f"*Why*\n{page.why}",
        f"*State*\n{page.state}{level_text}",
    ]
    quoted = ">" + escape(page.message[:1500]).replace("\n", "\n>")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": page.title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn",
                                     "text": f"{mention(page.audience)} a customer needs a person from the team."}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": text} for text in fields]},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*Message*\n{quoted}"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "*Reason*\n" + escape(page.reason[:1500])}},
    ]
    for index, draft in enumerate(page.drafts):
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*Draft {index + 1} (from voting)*\n"
                                                                          + escape(draft[:1500])}})
    link = (f"<{page.permalink}|Open the thread>" if page.permalink
            else f"Thread {page.thread_ts} in <#{page.channel}>")
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": link}})
    status = [escape(page.note)] if page.note else []
    if page.acknowledged_by:
        status.append(f"Acknowledged by <@{page.acknowledged_by}> {slack_time(page.acknowledged_at)}")
    if page.resolved_by:
        status.append(f"Resolved by <@{page.resolved_by}> {slack_time(page.resolved_at)}")
    if page.state == "expired":
        status.append(EXPIRED_STATUS)
    if status:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": line} for line in status]})
    buttons = [{"type": "button", "action_id": action, "text": {"type": "plain_text", "text": BUTTON_TEXT[action][0]},
                "value": str(page.escalation_id)} | ({"style": style} if (style := BUTTON_TEXT[action][1]) else {})
               for action in page.actions]
    if buttons:
        blocks.append({"type": "actions", "block_id": page.key, "elements": buttons})
    else:
        # Keep the block id, so a lost post can still be found after the buttons are gone.
        blocks.append({"type": "context", "block_id": page.key,
                       "elements": [{"type": "mrkdwn", "text": f"Closed: {page.state}"}]})
    return blocks
