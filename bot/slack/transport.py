"""The chat port over the Slack Web API: answers and notices in threads, pages, history, working status.

It renders the core's values for Slack: Markdown to mrkdwn, pages to Block Kit (bot.slack.pages)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import structlog
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.config import Config
from bot.domain import Answer, InboundMessage, Notice, PostedMessage, SlaWarning, Turn
from bot.errors import SupportbotError, TransportError
from bot.escalation.page import Page
from bot.ports import Capabilities
from bot.settings import Settings
from bot.slack.blocks import (
    REPLY_EVENT_TYPE,
    FeedbackStyle,
    reply_blocks,
    reply_metadata,
    request_value,
    thread_key,
)
from bot.slack.client import DEFAULT_TIMEOUT_S, build_web_client
from bot.slack.events import HUMAN_SUBTYPES
from bot.slack.mrkdwn import defuse_mentions, to_mrkdwn
from bot.slack.pages import page_blocks, page_text
from bot.slack.sla import sla_warning_blocks, sla_warning_text
from bot.slack.text import to_plain_text, without_pings

log = structlog.get_logger(__name__)

WORKING_REACTION: Final = "eyes"
WORKING_STATUS: Final = "is looking into it…"
# conversations.replies pages read when looking for a reply or loading a thread.
PAGE_SIZE: Final = 200
MAX_PAGES: Final = 10
# chat.startStream errors that will not go away by asking again (streaming is not available here).
STREAMING_UNAVAILABLE: Final = frozenset({
    "unknown_method", "not_allowed_token_type", "missing_scope", "feature_not_enabled", "not_enabled",
    "method_deprecated", "team_access_not_granted"})
# A message that cannot be updated any more: the answer is posted anew.
GONE: Final = frozenset({"message_not_found", "cant_update_message", "channel_not_found"})
# What Slack answers for a block it does not know (a workspace without `context_actions`).
BLOCKS_REFUSED: Final = frozenset({"invalid_blocks"})
# How far back in a page channel (newest first) a lost page is looked for.
PAGE_HISTORY_LIMIT: Final = 100
# Slack answers these when the working indicator is already in the wanted state.
_HARMLESS: Final = frozenset({"already_reacted", "no_reaction"})


class SlackSetupError(SupportbotError):
    """Slack refused the credentials at start (bad token, wrong workspace)."""


@dataclass(frozen=True)
class BotIdentity:
    user_id: str
    bot_id: str
    team_id: str


class SlackChat:
    """Implements bot.ports.ChatPort; raises TransportError when Slack did not take a message."""

    name: Final = "slack"
    # Reply metadata and page block ids find lost posts (scopes channels:history, groups:history, im:history);
    # usergroups.users.list needs usergroups:read.
    capabilities: Final = Capabilities(finds_lost_posts=True, usergroups=True, streams=True)

    def __init__(
        self, client: AsyncWebClient, *, quick_client: AsyncWebClient | None = None,
        session: aiohttp.ClientSession | None = None, history_budget_chars: int = 8_000,
    ) -> None:
        self.client = client
        # For cosmetic calls (reactions, status): no retries, a missing 👀 must never delay a reply.
        self._quick = quick_client or client
        self._session = session
        self._history_budget = history_budget_chars
        self._identity: BotIdentity | None = None
        # Set when Slack refused to start a stream for a reason that will not go away (an old workspace, a
        # missing scope): later answers are posted whole at once instead of asking again each time.
        self._streaming_refused: str | None = None
        # Set when Slack refused the `context_actions` feedback block: later answers carry plain buttons.
        self._feedback_refused: str | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def identity(self) -> BotIdentity:
        """Who the bot is in this workspace (auth.test, asked once)."""
        if self._identity is None:
            response = await self._call("auth.test", self.client.auth_test())
            self._identity = BotIdentity(str(response.get("user_id", "")), str(response.get("bot_id", "")),
                                         str(response.get("team_id", "")))
        return self._identity

    # --- answers and notices in threads ----------------------------------------------------------

    async def post_answer(self, msg: InboundMessage, answer: Answer) -> PostedMessage:
        text = without_pings(to_mrkdwn(answer.text))
        response = await self._with_feedback(answer, lambda feedback: self._call(
            "chat.postMessage", self.client.chat_postMessage(
                channel=msg.channel, thread_ts=msg.root_ts, text=text,
                blocks=reply_blocks(text, request_value=self._request_value(msg, answer),
                                    citations=answer.citations, feedback=feedback),
                metadata=reply_metadata(msg.dedupe_key), unfurl_links=False, unfurl_media=False)))
        return PostedMessage(str(response["channel"]), str(response["ts"]))

    async def _with_feedback(
        self, answer: Answer, send: Callable[[FeedbackStyle | None], Awaitable[AsyncSlackResponse]]
    ) -> AsyncSlackResponse:
        """Send an answer with Slack's own 👍/👎 block; where the workspace refuses that block, with plain
        buttons instead, from then on (the refusal is remembered like a refused stream)."""
        if not answer.asks_feedback:
            return await send(None)
        if self._feedback_refused is not None:
            return await send("buttons")
        try:
            return await send("context_actions")
        except TransportError as exc:
            if exc.code not in BLOCKS_REFUSED:
                raise
            response = await send("buttons")  # refused too: the problem is elsewhere, and it is raised
            log.warning("slack_feedback_block_refused", code=exc.code)
            self._feedback_refused = exc.code
            return response

    async def find_answer(self, msg: InboundMessage) -> PostedMessage | None:
        async for message in self._thread(msg.channel, msg.root_ts, include_metadata=True):
            metadata = message.get("metadata")
            if not isinstance(metadata, Mapping) or metadata.get("event_type") != REPLY_EVENT_TYPE:
                continue
            payload = metadata.get("event_payload")
            if isinstance(payload, Mapping) and payload.get("dedupe_key") == msg.dedupe_key:
                return PostedMessage(msg.channel, str(message["ts"]))
        return None

    # --- streamed answers -----------------------------------------------------------------------
    # Stream calls go out once, without the client's retries: a repeated append would show its text twice,
    # and a repeated start would leave a second, empty answer behind. The pipeline's streamer copes with a
    # failed call (it stops appending, and the final call replaces what the message shows).

    async def start_stream(self, msg: InboundMessage, markdown: str) -> PostedMessage:
        if self._streaming_refused is not None:
            raise TransportError(f"Slack refused streaming earlier ({self._streaming_refused})",
                                 code=self._streaming_refused)
        # Slack needs to know whom a stream in a channel is for; a DM has one recipient already.
        in_dm = msg.channel_type == "im"
        try:
            response = await self._call("chat.startStream", self._quick.chat_startStream(
                channel=msg.channel, thread_ts=msg.root_ts, markdown_text=_markdown(markdown),
                recipient_team_id=None if in_dm else msg.team, recipient_user_id=None if in_dm else msg.user))
        except TransportError as exc:
            if exc.code in STREAMING_UNAVAILABLE:
                log.warning("slack_streaming_unavailable", code=exc.code)
                self._streaming_refused = exc.code
            raise
        return PostedMessage(str(response["channel"]), str(response["ts"]))

    async def append_stream(self, stream: PostedMessage, markdown: str) -> None:
        await self._call("chat.appendStream", self._quick.chat_appendStream(
            channel=stream.channel, ts=stream.ts, markdown_text=_markdown(markdown)))

    async def finish_stream(self, msg: InboundMessage, stream: PostedMessage, answer: Answer, *,
                            shown: str | None) -> PostedMessage:
        """Stop the stream with the rest of the answer and its buttons; when the answer does not continue what
        the stream shows (or the stream is gone), stop it and replace the message with the answer."""
        metadata = reply_metadata(msg.dedupe_key)
        if shown is not None and answer.text.startswith(shown):
            rest = _markdown(answer.text[len(shown):])
            try:
                await self._with_feedback(answer, lambda feedback: self._call(
                    "chat.stopStream", self._quick.chat_stopStream(
                        channel=stream.channel, ts=stream.ts, markdown_text=rest or None,
                        blocks=reply_blocks(None, request_value=self._request_value(msg, answer),
                                            citations=answer.citations, feedback=feedback) or None,
                        metadata=metadata)))
                return stream
            except TransportError as exc:
                log.info("stream_stop_failed", code=exc.code)
        else:
            with contextlib.suppress(TransportError):  # already stopped or expired: it is replaced just below
                await self._call("chat.stopStream", self._quick.chat_stopStream(channel=stream.channel, ts=stream.ts))
        text = without_pings(to_mrkdwn(answer.text))
        try:
            await self._with_feedback(answer, lambda feedback: self._call("chat.update", self.client.chat_update(
                channel=stream.channel, ts=stream.ts, text=text,
                blocks=reply_blocks(text, request_value=self._request_value(msg, answer),
                                    citations=answer.citations, feedback=feedback),
                metadata=metadata)))
        except TransportError as exc:
            if exc.code not in GONE:
                raise
            # The streamed message is gone (deleted): the answer is posted anew.
            return await self.post_answer(msg, answer)
        return stream

    @staticmethod
    def _request_value(msg: InboundMessage, answer: Answer) -> str | None:
        """The "Get a human" button's value on an answer that offers a person."""
        return thread_key(msg.team, msg.channel, msg.root_ts) if answer.offers_human else None

    async def post_notice(self, channel: str, thread_ts: str, notice: Notice) -> PostedMessage:
        text = to_mrkdwn(notice.template)
        if notice.user is not None:
            text = text.replace("{user}", f"<@{notice.user}>")
        blocks = None
        if notice.human_trigger in ("user_request", "feedback"):
            team = (await self.identity()).team_id
            blocks = reply_blocks(text, request_value=request_value(team, channel, thread_ts, notice.human_trigger))
        response = await self._call("chat.postMessage", self.client.chat_postMessage(
            channel=channel, text=text, thread_ts=thread_ts, blocks=blocks, unfurl_links=False))
        return PostedMessage(str(response["channel"]), str(response["ts"]))

    # --- escalation pages ----------------------------------------------------------------------

    async def post_page(self, channel: str, page: Page) -> PostedMessage:
        response = await self._call("chat.postMessage", self.client.chat_postMessage(
            channel=channel, text=page_text(page), blocks=page_blocks(page), unfurl_links=False))
        return PostedMessage(str(response["channel"]), str(response["ts"]))

    async def post_sla_warning(self, channel: str, warning: SlaWarning) -> PostedMessage:
        response = await self._call("chat.postMessage", self.client.chat_postMessage(
            channel=channel, text=sla_warning_text(warning), blocks=sla_warning_blocks(warning), unfurl_links=False))
        return PostedMessage(str(response["channel"]), str(response["ts"]))

    async def update_page(self, posted: PostedMessage, page: Page) -> None:
        await self._call("chat.update", self.client.chat_update(
            channel=posted.channel, ts=posted.ts, text=page_text(page), blocks=page_blocks(page)))

    async def find_page(self, channel: str, page: Page) -> PostedMessage | None:
        response = await self._call("conversations.history",
                                    self.client.conversations_history(channel=channel, limit=PAGE_HISTORY_LIMIT))
        for message in response.get("messages") or []:
            if not isinstance(message, Mapping):
                continue
            for block in message.get("blocks") or []:
                if isinstance(block, Mapping) and block.get("block_id") == page.key:
                    return PostedMessage(channel, str(message["ts"]))
        return None

    async def usergroup_members(self, usergroup: str) -> list[str]:
        response = await self._call("usergroups.users.list", self.client.usergroups_users_list(usergroup=usergroup))
        users = response.get("users") or []
        return [str(user) for user in users if isinstance(user, str)]

    # --- other messages ------------------------------------------------------------------------

    async def post_ephemeral(self, channel: str, user: str, text: str, *, thread_ts: str | None = None) -> None:
        await self._call("chat.postEphemeral", self.client.chat_postEphemeral(
            channel=channel, user=user, text=text, thread_ts=thread_ts))

    async def open_dm(self, user: str) -> str:
        response = await self._call("conversations.open", self.client.conversations_open(users=user))
        channel = response.get("channel")
        if not isinstance(channel, Mapping) or not channel.get("id"):
            raise TransportError("Slack conversations.open returned no channel", code="no_channel")
        return str(channel["id"])

    async def permalink(self, channel: str, ts: str) -> str | None:
        try:
            response = await self._call("chat.getPermalink",
                                        self.client.chat_getPermalink(channel=channel, message_ts=ts))
        except TransportError as exc:
            log.warning("permalink_unavailable", error=str(exc))
            return None
        link = response.get("permalink")
        return str(link) if link else None

    async def thread_history(self, channel: str, thread_ts: str) -> list[Turn]:
        me = await self.identity()
        turns: list[Turn] = []
        async for message in self._thread(channel, thread_ts, include_metadata=False):
            if message.get("subtype") not in (None, *HUMAN_SUBTYPES):
                continue
            ours = message.get("bot_id") == me.bot_id or message.get("user") == me.user_id
            if message.get("bot_id") and not ours:
                continue  # other apps' messages are not part of the conversation
            text = to_plain_text(str(message.get("text") or ""), bot_user_id=me.user_id)
            if text:
                user = message.get("user")
                turns.append(Turn(role="assistant" if ours else "user", text=text,
                                  user=user if isinstance(user, str) else None))
        return _newest_within(turns, self._history_budget)

    # --- working indicator --------------------------------------------------------------------

    async def set_working(self, msg: InboundMessage, working: bool) -> None:
        if msg.assistant_thread and await self._set_status(msg, WORKING_STATUS if working else ""):
            return
        method = "reactions.add" if working else "reactions.remove"
        call = (self._quick.reactions_add if working else self._quick.reactions_remove)
        try:
            await call(channel=msg.channel, timestamp=msg.ts, name=WORKING_REACTION)
        except SlackApiError as exc:
            if _error_code(exc) not in _HARMLESS:
                log.info("working_indicator_failed", method=method, error=_error_code(exc))
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("working_indicator_failed", method=method, error=type(exc).__name__)

    async def _set_status(self, msg: InboundMessage, status: str) -> bool:
        try:
            await self._quick.assistant_threads_setStatus(channel_id=msg.channel, thread_ts=msg.root_ts,
                                                          status=status)
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            # Not an assistant thread after all (a plain threaded DM): fall back to the reaction.
            log.info("assistant_status_failed", error=_error_code(exc) if isinstance(exc, SlackApiError)
                     else type(exc).__name__)
            return False
        return True

    async def set_suggested_prompts(
        self, channel: str, thread_ts: str, prompts: Sequence[Mapping[str, str]], *, title: str | None = None
    ) -> None:
        await self._call("assistant.threads.setSuggestedPrompts", self.client.assistant_threads_setSuggestedPrompts(
            channel_id=channel, thread_ts=thread_ts, prompts=[dict(p) for p in prompts], title=title))

    # --- plumbing -----------------------------------------------------------------------------

    async def _thread(
        self, channel: str, thread_ts: str, *, include_metadata: bool
    ) -> AsyncIterator[Mapping[str, Any]]:
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            response = await self._call("conversations.replies", self.client.conversations_replies(
                channel=channel, ts=thread_ts, limit=PAGE_SIZE, cursor=cursor,
                include_all_metadata=True if include_metadata else None))
            for message in response.get("messages") or []:
                if isinstance(message, Mapping):
                    yield message
            metadata = response.get("response_metadata") or {}
            cursor = metadata.get("next_cursor") if isinstance(metadata, Mapping) else None
            if not cursor:
                return

    @staticmethod
    async def _call(method: str, pending: Any) -> AsyncSlackResponse:
        """Await one Web API call (the SDK already retried what is safe) and map failures to TransportError."""
        try:
            response: AsyncSlackResponse = await pending
        except SlackApiError as exc:
            code = _error_code(exc)
            raise TransportError(f"Slack {method} failed: {code}", code=code) from exc
        except TimeoutError as exc:
            raise TransportError(f"Slack {method} failed: timed out", code="timeout") from exc
        except aiohttp.ClientError as exc:
            raise TransportError(f"Slack {method} failed: {type(exc).__name__} {exc}".strip(),
                                 code="connection") from exc
        return response


def _markdown(text: str) -> str:
    """Markdown for a stream, unable to ping anyone: `<!here>` and `@channel` forms are defused."""
    return defuse_mentions(without_pings(text))


def _error_code(exc: SlackApiError) -> str:
    response = exc.response
    error = response.get("error") if response is not None and hasattr(response, "get") else None
    if error:
        return str(error)
    status = getattr(response, "status_code", None)
    return f"http_{status}" if status else "error"


def _newest_within(turns: list[Turn], budget: int) -> list[Turn]:
    kept: list[Turn] = []
    used = 0
    for turn in reversed(turns):
        used += len(turn.text)
        if used > budget and kept:
            break
        kept.append(turn)
    return list(reversed(kept))


async def open_slack_chat(settings: Settings, config: Config, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> SlackChat:
    """The Slack transport for `settings` (SLACK_BOT_TOKEN, SLACK_API_URL), with one pooled HTTP session."""
    if settings.slack_bot_token is None:
        raise SlackSetupError("SLACK_BOT_TOKEN is not set")
    token = settings.slack_bot_token.get_secret_value()
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))
    client = build_web_client(token, base_url=settings.slack_api_url, session=session, timeout_s=timeout_s)
    quick = build_web_client(token, base_url=settings.slack_api_url, session=session, timeout_s=timeout_s,
                             retries=False)
    return SlackChat(client, quick_client=quick, session=session,
                     history_budget_chars=config.bot.history_budget_chars)
