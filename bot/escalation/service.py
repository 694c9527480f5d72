"""Escalation to on-call humans: open, acknowledge, resolve, re-page and expire; safe on several replicas.

State machine (bot.vocabulary.EscalationState; stored in `escalations`, every change in `escalation_events`):

    paged ──ack──▶ acknowledged ──resolve──▶ resolved
      │  └──────────────resolve────────────────▲
      └──expire (nobody acknowledged within expire_after_h)──▶ expired
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import structlog
from sqlalchemy.exc import IntegrityError

from bot.clock import Clock
from bot.config import Config
from bot.domain import InboundMessage, Notice
from bot.escalation.learning import propose_answer
from bot.escalation.paging import Pager
from bot.escalation.roster import Roster
from bot.ports import ChatPort
from bot.sla.clocks import start_escalation_clocks
from bot.sla.policy import SlaPolicy
from bot.vocabulary import OPEN_ESCALATION_STATES, ConversationState, EscalationState, Trigger
from storage import escalations as records
from storage import repositories as repo
from storage.engine import Database
from storage.models import Escalation

log = structlog.get_logger(__name__)

# In local mode with no roster configured, the playground acts as this on-call person.
LOCAL_ONCALL_USER = "ULOCALONCALL"
SWEEP_BATCH = 50

ActionResult = Literal["done", "already", "refused", "not_found"]
# The triggers a person's "Get a human" press opens an escalation with.
RequestTrigger = Literal["user_request", "feedback"]
REQUEST_REASONS: dict[RequestTrigger, str] = {
    "user_request": "pressed the “Get a human” button",
    "feedback": "rated the answer 👎 and pressed “Get a human”",
}
# What the person who pressed "Get a human" is told when no escalation was opened (each chat adapter says it).
HUMAN_ALREADY = "A person from the support team has already been asked to help in this thread."
HUMAN_NOT_FOUND = "I can't find that conversation any more; please post your question again."

REQUEST_NOTICE = Notice("I've asked a person from the support team to join; they will reply in this thread. "
                        "I'll stay quiet here in the meantime.")
ACK_NOTICE = "{user} from the support team is on it and will reply here."
RESOLVE_NOTICE = "{user} from the support team marked this as resolved."
EXPIRED_NOTICE = Notice("I'm sorry: nobody from the support team could pick this up in time. I'll answer here "
                        "again; if you still need a person, ask for one and I'll page the team once more.")


@dataclass(frozen=True)
class EscalationRequest:
    msg: InboundMessage
    conversation_id: int
    trigger: Trigger
    reason: str
    decision_id: int | None = None
    route: str | None = None
    confidence: float | None = None
    drafts: tuple[str, ...] = ()


class EscalationService:
    """The escalation API for the rest of the bot:

      escalate(EscalationRequest) -> id          the pipeline (route, rule, vote, LLM failure, failure)
      request_human(team, channel, thread_ts, user) -> ActionResult   the "Get a human" button
      acknowledge(id, user) / resolve(id, user) -> ActionResult       the page buttons
      sweep() -> int                             periodic: unpaged rounds, re-pages, expiry
      roster                                     who is on call (Roster)
    """

    def __init__(self, config: Config, db: Database, chat: ChatPort, clock: Clock) -> None:
        """In local mode (the port's `local_page_channel`) pages go to that channel when the config names none,
        and with nobody configured LOCAL_ONCALL_USER may press the buttons."""
        capabilities = chat.capabilities
        self._local = capabilities.local_page_channel is not None
        self._settings = config.escalation
        self._sla = SlaPolicy(config.sla)
        self._db = db
        self._chat = chat
        self._clock = clock
        self.roster = Roster(config, members=chat.usergroup_members if capabilities.usergroups else None,
                             clock=clock, local_oncall=LOCAL_ONCALL_USER if self._local else None)
        self._pager = Pager(config.escalation, db, chat, clock, self.roster,
                            default_channel=capabilities.local_page_channel)
        problem = self.paging_problem()
        if problem is not None:
            log.error("escalation_nobody_to_page", problem=problem)

    @property
    def local_oncall_user(self) -> str | None:
        """Who the local playground acts as when it answers a page (None outside local mode)."""
        if not self._local:
            return None
        candidates = [self.roster.local_oncall, *self.roster.oncall(self._clock.now()), *self.roster.everyone()]
        return next((user for user in candidates if user), None)

    def paging_problem(self) -> str | None:
        """Why pages cannot reach anyone with this config, or None when they can."""
        return self._pager.paging_problem()

    # --- opening ----------------------------------------------------------------------------

    async def escalate(self, request: EscalationRequest) -> int:
        """Open (once per triggering message, at most one open per thread) and page; returns the id.

        A page that cannot be posted now (Slack down) is left unpaged for the sweeper; never raises
        TransportError, so the pipeline goes on to tell the user."""
        msg = request.msg
        escalation = Escalation(
            conversation_id=request.conversation_id, decision_id=request.decision_id,
            dedupe_key=msg.dedupe_key, trigger=request.trigger, reason=request.reason[:2000],
            requester=msg.user, summary=msg.text[:4000], route=request.route, confidence=request.confidence,
            drafts=[str(draft)[:4000] for draft in request.drafts[:5]],
            permalink=await self._permalink(msg.channel, msg.ts),
        )
        escalation_id, created = await self._open(escalation)
        if created:
            await self._pager.deliver_round(escalation_id, round_no=1, level=1)
        else:
            await self._pager.deliver_if_due(escalation_id)
        return escalation_id

    async def request_human(self, team: str, channel: str, thread_ts: str, user: str, *,
                            trigger: RequestTrigger = "user_request") -> ActionResult:
        """The "Get a human" button (on an answer, or on the offer after a 👎: trigger "feedback"): open an
        escalation for the thread, page, tell the thread.

        "done" when opened, "already" when the thread has an open escalation (nothing changes)."""
        async with self._db.sessions() as session:
            existing = await repo.find_conversation(session, team=team, channel=channel, thread_ts=thread_ts)
            if existing is not None and await records.open_for(session, existing.id) is not None:
                return "already"
        permalink = await self._permalink(channel, thread_ts)
        async with self._db.sessions.begin() as session:
            conversation_id = (await repo.open_conversation(
                session, source=self._chat.name, team=team, channel=channel, thread_ts=thread_ts, user=user,
                now=self._clock.now(), likely_new=False)).id
            context = await records.request_context(session, conversation_id)
        escalation = Escalation(
            conversation_id=conversation_id, decision_id=context.decision_id,
            dedupe_key=f"request:{team}:{channel}:{thread_ts}:{context.earlier + 1}", trigger=trigger,
            reason=REQUEST_REASONS[trigger], requester=user,
            summary=(context.last_text or "(asked for a person)")[:4000], route=context.route,
            confidence=context.confidence, drafts=[], permalink=permalink,
        )
        escalation_id, created = await self._open(escalation)
        if not created:
            return "already"
        await self._pager.deliver_round(escalation_id, round_no=1, level=1)
        await self._pager.tell_thread(channel, thread_ts, REQUEST_NOTICE)
        return "done"

    async def _open(self, escalation: Escalation) -> tuple[int, bool]:
        """Insert the escalation, claimed for immediate delivery; or find the one that already exists."""
        now = self._clock.now()
        escalation.state = EscalationState.PAGED
        escalation.level = 1
        escalation.repage_count = 0
        escalation.paged_rounds = 0
        escalation.next_action_at = self._pager.lease_until(now)
        escalation.created_at = escalation.updated_at = now
        try:
            async with self._db.sessions.begin() as session:
                found = await records.existing(session, escalation.dedupe_key, escalation.conversation_id)
                if found is not None:
                    return found, False
                escalation_id = await records.insert(session, escalation, now=now)
                thread = await records.thread_of(session, escalation_id)
                await start_escalation_clocks(session, self._sla, escalation_id=escalation_id,
                                              conversation_id=escalation.conversation_id, route=escalation.route,
                                              channel=thread.channel, paged_at=now)
        except IntegrityError:
            # Another replica (or a double click) opened it a moment ago.
            async with self._db.sessions() as session:
                found = await records.existing(session, escalation.dedupe_key, escalation.conversation_id)
            if found is None:
                raise
            return found, False
        log.info("escalation_opened", escalation_id=escalation_id, trigger=escalation.trigger)
        return escalation_id, True

    # --- buttons ----------------------------------------------------------------------------

    async def acknowledge(self, escalation_id: int | str, user: str) -> ActionResult:
        """`escalation_ack`: "done", "already" (double click, replay, or not paged any more),
        "refused" (not on call or staff: nothing changes), "not_found"."""
        return await self._transition(escalation_id, user, EscalationState.ACKNOWLEDGED,
                                      from_states=(EscalationState.PAGED,))

    async def resolve(self, escalation_id: int | str, user: str) -> ActionResult:
        """`escalation_resolve`: same answers as acknowledge; resolving lets the bot answer the thread again, and
        what the team answered in the thread is proposed as knowledge (bot.escalation.learning)."""
        return await self._transition(escalation_id, user, EscalationState.RESOLVED,
                                      from_states=OPEN_ESCALATION_STATES)

    async def _transition(
        self, raw_id: int | str, user: str, to_state: EscalationState, *,
        from_states: tuple[EscalationState, ...], note: str = "", tell_thread: bool = True,
    ) -> ActionResult:
        escalation_id = parse_escalation_id(raw_id)
        if not await self.roster.authorize(user):
            log.info("escalation_action_refused", escalation_id=str(raw_id)[:40], user=user, to_state=to_state)
            return "refused"
        if escalation_id is None:
            return "not_found"
        async with self._db.sessions.begin() as session:
            done = await records.transition(session, escalation_id, to_state=to_state, from_states=from_states,
                                            actor=user, note=note, now=self._clock.now())
            if done is None:
                exists = await session.get(Escalation, escalation_id) is not None
        if done is None:
            return "already" if exists else "not_found"
        log.info("escalation_transition", escalation_id=escalation_id, from_state=done.previous, state=to_state,
                 actor=user)
        if to_state is EscalationState.RESOLVED:
            await self._propose_answer(escalation_id)
        await self._pager.refresh_pages(escalation_id)
        if tell_thread:
            template = ACK_NOTICE if to_state is EscalationState.ACKNOWLEDGED else RESOLVE_NOTICE
            await self._pager.tell_thread(done.thread.channel, done.thread.thread_ts, Notice(template, user))
        return "done"

    # --- the sweeper ----------------------------------------------------------------------------

    async def sweep(self) -> int:
        """Post unpaged rounds, re-page unacknowledged escalations whose time is up, expire old ones.

        Safe on every replica at once: each step claims its row with a conditional UPDATE first.
        Returns how many page rounds it posted plus how many escalations it closed (expired, or
        acknowledged because a staff member answered in the thread)."""
        now = self._clock.now()
        await self.roster.usergroup_members()  # keeps the cache Roster.may_act reads warm
        async with self._db.sessions() as session:
            due = await records.due(session, now=now, limit=SWEEP_BATCH)
        acted = 0
        for item in due:
            try:
                acted += await self._sweep_one(item, now)
            except Exception:
                log.exception("escalation_sweep_failed", escalation_id=item.id)
        return acted

    async def _sweep_one(self, due: records.Due, now: datetime) -> int:
        pager = self._pager
        if now >= pager.expires_at(due.created_at):
            return int(await self._expire(due, now))
        if due.conversation_state == ConversationState.TAKEN_OVER and due.taken_over_by:
            # A staff member already answered in the thread: they have it, stop paging.
            result = await self._transition(due.id, due.taken_over_by, EscalationState.ACKNOWLEDGED,
                                            from_states=(EscalationState.PAGED,), note="replied in the thread",
                                            tell_thread=False)
            if result == "done":
                return 1
        if due.unpaged:
            # The round could not be posted (Slack down, crash); post it now.
            if await pager.claim(due, now):
                return int(await pager.deliver_round(due.id, round_no=due.current_round, level=due.level))
            return 0
        if due.current_round >= pager.max_rounds:
            # Every re-page is spent: wait for an acknowledgement until the escalation expires.
            await pager.claim(due, now, until=pager.expires_at(due.created_at))
            return 0
        level = await pager.claim_repage(due, now)
        if level is None:
            return 0
        return int(await pager.deliver_round(due.id, round_no=due.current_round + 1, level=level))

    async def _expire(self, due: records.Due, now: datetime) -> bool:
        async with self._db.sessions.begin() as session:
            thread = await records.expire(session, due, now=now,
                                          note=f"nobody acknowledged within {self._settings.expire_after_h}h")
        if thread is None:
            return False
        log.warning("escalation_expired", escalation_id=due.id)
        await self._pager.refresh_pages(due.id)
        if thread.state == ConversationState.ESCALATED:
            # Nobody came: the bot answers this thread again rather than leave it silent.
            await self._pager.tell_thread(thread.channel, thread.thread_ts, EXPIRED_NOTICE)
        return True

    async def _propose_answer(self, escalation_id: int) -> None:
        """Before the page and thread are told (Slack may be down): the lesson does not wait on them."""
        try:
            await propose_answer(self._db, self._chat, self._clock, escalation_id)
        except Exception:  # the escalation is resolved either way; a lost proposal is only a lost lesson
            log.exception("knowledge_proposal_failed", escalation_id=escalation_id)

    async def _permalink(self, channel: str, ts: str) -> str | None:
        try:
            return await self._chat.permalink(channel, ts)
        except Exception as exc:  # the page is more useful without a link than not at all
            log.warning("permalink_unavailable", channel=channel, ts=ts, error=str(exc))
            return None


def parse_escalation_id(raw: int | str) -> int | None:
    """A button value as an escalation id; None for anything that cannot be one (garbage, overflow)."""
    text = str(raw).strip()
    if not text.isdigit() or len(text) > 18:
        return None
    value = int(text)
    return value if value > 0 else None
