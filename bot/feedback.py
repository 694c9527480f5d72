"""The resolution loop: people rate the bot's answers (👍 / 👎), and each thread gets what became of it.

A rating counts from the person who asked (and from staff or on-call, whose ratings are kept for review but
do not settle the thread); the latest press wins. The asker's 👍 settles the thread as resolved_by_bot, a 👎
is answered with an offer: say what was wrong (the next message is kept as the reason and answered), or
"Get a human" (an escalation with trigger "feedback"). A thanks such as "thanks, that worked" settles it too;
`settle` closes threads that went quiet for [resolution] assume_resolved_after_h (bot.vocabulary.Resolution).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Final, Literal

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import Clock
from bot.config import Config
from bot.domain import FeedbackPress, Notice
from bot.escalation import Roster
from bot.ports import ChatPort
from bot.sla.clocks import record_bot_resolution
from bot.sla.policy import SlaPolicy
from bot.vocabulary import ConversationState, FeedbackValue, Resolution, ResolutionBasis
from storage import feedback as store
from storage.engine import Database
from storage.models import Conversation

log = structlog.get_logger(__name__)

BAD_ANSWER_OFFER: Final = Notice(
    "Sorry that didn't help. Tell me here what was wrong or what you expected and I'll try again, or press "
    "“Get a human” and a person from the support team will take over.", human_trigger="feedback")
NOT_THE_ASKER: Final = "Only the person who asked can rate this answer. Thanks for looking, though!"
ANSWER_NOT_FOUND: Final = "I can't find that answer any more, so the rating was not recorded."
SETTLE_BATCH: Final = 200

# "recorded" (a first rating), "changed" (another value than before), "unchanged" (the same press again),
# "not_asker" (someone else's answer: not recorded), "not_found" (no answer of the bot's at that message).
FeedbackResult = Literal["recorded", "changed", "unchanged", "not_asker", "not_found"]

# A thanks that confirms the answer worked: gratitude or success, and nothing that doubts it.
_GRATITUDE = re.compile(r"\b(thanks?|thank (you|u)|thx|ty|cheers|much appreciated|appreciate it)\b|🙏|👍|🙌",
                        re.IGNORECASE)
_SUCCESS = re.compile(r"\b(that|it|this) (worked|works|did it|helped|did the trick|fixed it)\b"
                      r"|\b(solved|fixed|resolved|sorted|works now|working now|all good)\b", re.IGNORECASE)
_DOUBT = re.compile(r"\b(but|still|not|no|never|however|although|though|except|unfortunately|again|error|errors|"
                    r"fail|fails|failed|failing|broken|wrong|try|trying|will|later|check|doesnt|didnt|isnt|"
                    r"wont|cant|dont|yet)\b|n[’']t\b|\?", re.IGNORECASE)
THANKS_MAX_WORDS: Final = 14


def is_thanks(text: str) -> bool:
    """A short message that says the answer worked ("thanks, that worked", "perfect, fixed!"); anything that
    doubts it ("thanks but it still fails", "thanks, I'll try") or asks something is not one."""
    words = text.split()
    if not words or len(words) > THANKS_MAX_WORDS or _DOUBT.search(text):
        return False
    return bool(_GRATITUDE.search(text) or _SUCCESS.search(text))


async def resolved_by_bot(session: AsyncSession, policy: SlaPolicy, conversation_id: int, *,
                          basis: ResolutionBasis, now: datetime, unless: tuple[Resolution, ...] = (),
                          only_if_open: bool = False) -> bool:
    """Settle the thread as resolved by the bot and stop its time-to-resolution clock (SLA), in one transaction;
    False when the thread was not changed (`unless`, `only_if_open`)."""
    if not await store.set_resolution(session, conversation_id, "resolved_by_bot", basis=basis, now=now,
                                      unless=unless, only_if_open=only_if_open):
        return False
    route, channel = await store.thread_route(session, conversation_id)
    await record_bot_resolution(session, policy, conversation_id=conversation_id, route=route, channel=channel,
                                at=now)
    log.info("thread_resolved", conversation_id=conversation_id, resolution="resolved_by_bot", basis=basis)
    return True


async def asker_wrote(session: AsyncSession, policy: SlaPolicy, conversation_id: int, *, user: str, text: str,
                      now: datetime) -> bool:
    """A new message in a thread: from the asker, it is the reason for a 👎 just given, confirms the answer
    (a thanks: returns True) or reopens a thread that was settled as resolved by the bot or abandoned."""
    conversation = await session.get(Conversation, conversation_id, populate_existing=True)
    if conversation is None or conversation.user != user:
        return False
    await store.note_reason(session, conversation_id, user=user, text=text, now=now)
    resolution = conversation.resolution
    if ConversationState(conversation.state).person_has_it or resolution in ("escalated", "resolved_by_human"):
        return False
    if is_thanks(text) and await store.has_answer(session, conversation_id):
        return await resolved_by_bot(session, policy, conversation_id, basis="thanks", now=now)
    if resolution is not None:
        await store.set_resolution(session, conversation_id, None, basis=None, now=now)
    return False


class FeedbackService:
    """Records ratings (`rate`) and settles quiet threads (`settle`, run by the background loop)."""

    def __init__(self, config: Config, db: Database, chat: ChatPort, clock: Clock, roster: Roster) -> None:
        self._window = timedelta(hours=config.resolution.assume_resolved_after_h)
        self._sla = SlaPolicy(config.sla)
        self._db = db
        self._chat = chat
        self._clock = clock
        self._roster = roster

    async def rate(self, press: FeedbackPress) -> FeedbackResult:
        """Record `press`; the asker's 👎 (not a repeated one) posts the offer of a person in the thread."""
        async with self._db.sessions() as session:
            answered = await store.answered_decision(session, team=press.team, channel=press.channel,
                                                     thread_ts=press.thread_ts, reply_ts=press.answer_ts)
        if answered is None:
            return "not_found"
        from_asker = press.user == answered.asker
        if not from_asker and not await self._roster.authorize(press.user):
            log.info("feedback_not_counted", user=press.user, decision_id=answered.decision_id)
            return "not_asker"
        now = self._clock.now()
        try:
            previous = await self._record(answered, press, from_asker, now)
        except IntegrityError:  # a double click (or another replica) stored the first rating a moment ago
            previous = await self._record(answered, press, from_asker, now)
        log.info("feedback_recorded", decision_id=answered.decision_id, user=press.user, value=press.value,
                 previous=previous, from_asker=from_asker)
        if previous == press.value:
            return "unchanged"
        person_has_it = ConversationState(answered.conversation_state).person_has_it
        if from_asker and press.value == "bad" and not person_has_it:
            await self._chat.post_notice(press.channel, press.thread_ts, BAD_ANSWER_OFFER)
        return "recorded" if previous is None else "changed"

    async def _record(self, answered: store.AnsweredDecision, press: FeedbackPress, from_asker: bool,
                      now: datetime) -> FeedbackValue | None:
        async with self._db.sessions.begin() as session:
            previous = await store.record_feedback(session, answered, user=press.user, value=press.value, now=now)
            if from_asker:
                await self._settle_by_rating(session, answered.conversation_id, press, now)
        return previous

    async def _settle_by_rating(self, session: AsyncSession, conversation_id: int, press: FeedbackPress,
                                now: datetime) -> None:
        """The asker's 👍 confirms the bot resolved the thread; a 👎 takes that back (the window decides)."""
        if press.value == "good":
            await resolved_by_bot(session, self._sla, conversation_id, basis="feedback", now=now,
                                  unless=("escalated", "resolved_by_human"))
        else:
            await store.set_resolution(session, conversation_id, None, basis=None, now=now,
                                       unless=("escalated", "resolved_by_human", "abandoned"))

    async def settle(self) -> int:
        """Settle threads nobody wrote in or rated for the window; returns how many were settled."""
        now = self._clock.now()
        async with self._db.sessions() as session:
            quiet = await store.quiet_threads(session, cutoff=now - self._window, limit=SETTLE_BATCH)
        settled = 0
        for thread in quiet:
            resolution, basis = self._outcome(thread)
            async with self._db.sessions.begin() as session:
                if resolution == "resolved_by_bot":
                    changed = await resolved_by_bot(session, self._sla, thread.conversation_id, basis=basis,
                                                    now=now, only_if_open=True)
                else:
                    changed = await store.set_resolution(session, thread.conversation_id, resolution, basis=basis,
                                                         now=now, only_if_open=True)
                    if changed:
                        log.info("thread_resolved", conversation_id=thread.conversation_id, resolution=resolution,
                                 basis=basis)
                settled += int(changed)
        return settled

    @staticmethod
    def _outcome(thread: store.QuietThread) -> tuple[Resolution, ResolutionBasis]:
        if thread.state == ConversationState.TAKEN_OVER:
            return "resolved_by_human", "staff_answer"
        if thread.asker_feedback == "bad":
            return "abandoned", "feedback"
        if thread.last_is_answer:
            return "resolved_by_bot", "no_follow_up"
        if thread.state == ConversationState.RESOLVED:
            return "resolved_by_human", "escalation_resolved"
        return "abandoned", "no_follow_up"
