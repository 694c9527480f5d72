"""The path of one message: dedupe -> load thread -> route -> handle -> vote -> reply or escalate -> record.

`accept` runs before the transport acks (the inbox row is the proof of receipt); `process` runs
after it, holding a lease on the inbox row so that exactly one worker, on any replica, answers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import Clock
from bot.config import Config
from bot.domain import (
    Answer,
    Citation,
    Document,
    Grounding,
    InboundMessage,
    PostedMessage,
    ProcessResult,
    ThreadState,
    Turn,
    VoteResult,
)
from bot.errors import LLMError, TransportError
from bot.escalation import EscalationRequest, EscalationService
from bot.feedback import asker_wrote
from bot.grounding import Knowledge
from bot.llm.base import LLM
from bot.metrics import Metrics
from bot.ports import ChatPort
from bot.router.base import RouteDecision, Router, RoutingContext
from bot.sla.clocks import start_clock
from bot.sla.policy import SlaPolicy
from bot.streaming import AnswerStreamer
from bot.vocabulary import ConversationState, Outcome, Trigger
from bot.voting import Voter
from handlers.persona import PersonaHandler
from handlers.registry import HandlerRegistry
from storage import repositories as repo
from storage import sla as clocks
from storage.engine import Database
from storage.models import DecisionRecord, InboundEvent, Vote, VoteSampleRow

log = structlog.get_logger(__name__)

DEFAULT_LEASE = timedelta(seconds=60)
MAX_ATTEMPTS = 5
RETRY_BACKOFF_S = (5, 30, 120, 600)
PLEASANTRY = re.compile(
    r"^\W*(thanks?( you)?( so much| a lot)?|thx|ty|cheers|ok(ay)?|k|cool|great|perfect|awesome|got it|"
    r"sounds good|will do|np|no worries|:[a-z0-9_+-]+:|👍|🙏|🙌|✅)[\s!.:)]*\W*$",
    re.IGNORECASE,
)
FAILURE_NOTE = ("Sorry, something went wrong on my side while answering. I've asked a person from the "
                "support team to pick this up here.")
LLM_DOWN_NOTE = ("Sorry, I can't draft an answer right now (our AI service isn't responding). I've "
                 "asked a person from the support team to reply in this thread.")
NO_DOCS_NOTE = "_Our docs don't cover this question, so this is general guidance, not documented policy._"
NO_DOCS_ESCALATED = ("I couldn't find this in our docs, so I've asked a person from the support team to answer "
                     "here rather than guess.")
VOTE_NOTE = ("Thanks, I want a person to double-check the answer to this one. I've asked someone "
             "from the support team to reply in this thread.")


@dataclass(frozen=True)
class LoadedThread:
    """The thread as the claim transaction found it."""

    thread: ThreadState
    message_id: int
    # The decision already logged for this message, when a crash interrupted a first attempt.
    existing: DecisionRecord | None
    joined_late: bool
    # The asker's message says the bot's answer worked ("thanks, that worked"): the thread is resolved.
    thanked: bool = False


@dataclass(frozen=True)
class Handled:
    """What the handling steps decided to say, and whether a human was paged."""

    answer: Answer
    outcome: Outcome
    escalation_id: int | None = None
    vote: VoteResult | None = None
    # The stream this answer was written into as it came, if any.
    stream: AnswerStreamer | None = None


def grounded_answer(text: str, grounding: Grounding | None) -> Answer:
    """The answer with the pages it was grounded in; when the docs do not cover it, it says so first."""
    if grounding is not None and grounding.missing and not text.startswith(NO_DOCS_NOTE):
        text = f"{NO_DOCS_NOTE}\n\n{text}"
    return Answer(text, citations=grounding.citations if grounding is not None else (), asks_feedback=True)


def recorded_citations(decision: DecisionRecord | None) -> tuple[Citation, ...]:
    """The citations of an answer decided before a crash, from what its decision recorded."""
    if decision is None or not decision.sources:
        return ()
    return Grounding(tuple(Document.from_record(source) for source in decision.sources)).citations


class Pipeline:
    def __init__(
        self, *, config: Config, db: Database, router: Router, handlers: HandlerRegistry, voter: Voter,
        escalations: EscalationService, chat: ChatPort, llm: LLM, clock: Clock, metrics: Metrics,
        instance_id: str, lease: timedelta = DEFAULT_LEASE, knowledge: Knowledge | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self.router = router
        self.handlers = handlers
        self.voter = voter
        self.escalations = escalations
        self.chat = chat
        self.llm = llm
        self.clock = clock
        self.metrics = metrics
        self.instance_id = instance_id
        self.lease = lease
        self.knowledge = knowledge
        self.sla = SlaPolicy(config.sla)

    # --- entry points -------------------------------------------------------------------------

    async def accept(self, msg: InboundMessage) -> int | None:
        """Step 1, before the ack: record the message in the inbox; None if it was seen before."""
        [inbox_id] = await self.accept_many([msg])
        return inbox_id

    async def accept_many(self, msgs: Sequence[InboundMessage]) -> list[int | None]:
        """`accept` for messages that arrived together, in one transaction (the Slack adapter groups acks)."""
        async with self.db.sessions.begin() as session:
            ids = await repo.insert_inbound_many(session, [
                {"dedupe_key": msg.dedupe_key, "event_id": msg.event_id, "source": msg.source,
                 "payload": dataclasses.asdict(msg)} for msg in msgs], now=self.clock.now())
        for msg, inbox_id in zip(msgs, ids, strict=True):
            if inbox_id is None:
                self.metrics.duplicates.inc()
                log.info("duplicate_dropped", event_id=msg.event_id, dedupe_key=msg.dedupe_key)
        return ids

    async def handle(self, msg: InboundMessage) -> ProcessResult:
        """Accept and process at once (terminal chat, playground, tests)."""
        inbox_id = await self.accept(msg)
        if inbox_id is None:
            return ProcessResult(outcome="ignored", duplicate=True)
        result = await self.process(inbox_id)
        return result or ProcessResult(outcome="ignored", duplicate=True)

    async def process(self, inbox_id: int) -> ProcessResult | None:
        """Everything after the ack. None when another worker holds or finished this message."""
        now = self.clock.now()
        try:
            async with self.db.sessions.begin() as session:
                # Claiming and loading the thread share one transaction: round trips are the pipeline's cost.
                event = await repo.claim_inbound(session, inbox_id, owner=self.instance_id, now=now, lease=self.lease)
                if event is None:
                    return None
                msg = InboundMessage.from_record(event.payload)
                loaded = None if event.reply_ts is not None else await self._load_thread(session, msg, now)
        except Exception as exc:
            await self._count_failed_load(inbox_id, exc)
            raise
        structlog.contextvars.bind_contextvars(
            team=msg.team, channel=msg.channel, thread_ts=msg.root_ts, event_id=msg.event_id)
        self.metrics.in_flight.inc()
        heartbeat = asyncio.create_task(self._keep_lease(event.id), name=f"lease-{event.id}")
        try:
            if loaded is None:
                await self._finish(event, outcome=event.outcome or "replied")
                return ProcessResult(outcome="replied", notes=("already answered before a restart",))
            return await self._process_claimed(event, msg, loaded)
        finally:
            heartbeat.cancel()
            self.metrics.in_flight.dec()
            structlog.contextvars.unbind_contextvars("team", "channel", "thread_ts", "event_id", "route")

    async def _count_failed_load(self, inbox_id: int, exc: Exception) -> None:
        """The claim rolled back with the failed load, and the attempt count with it: count it on its own and
        back off, or a message that can never be loaded is retried by every recovery pass, forever."""
        try:
            async with self.db.sessions.begin() as session:
                event = await repo.claim_inbound(session, inbox_id, owner=self.instance_id, now=self.clock.now(),
                                                 lease=self.lease)
            if event is not None:
                await self._retry_later(event, exc)
        except Exception as second:  # the database is down: recovery tries the message again later
            log.warning("failed_load_not_counted", inbox_id=inbox_id, error=str(second))

    async def _keep_lease(self, inbox_id: int) -> None:
        """Renew the lease while a slow LLM keeps us busy, so no other replica starts the message too."""
        while True:
            await asyncio.sleep(self.lease.total_seconds() / 3)
            try:
                async with self.db.sessions.begin() as session:
                    kept = await repo.renew_lease(session, inbox_id, owner=self.instance_id,
                                                  until=self.clock.now() + self.lease)
            except Exception as exc:  # a missed renewal only risks a duplicate attempt, caught at delivery
                log.warning("lease_renewal_failed", error=str(exc))
                continue
            if not kept:
                log.warning("lease_lost", inbox_id=inbox_id)
                return

    async def _process_claimed(self, event: InboundEvent, msg: InboundMessage, loaded: LoadedThread) -> ProcessResult:
        await self._working(msg, True)
        try:
            return await self._run(event, msg, loaded)
        except TransportError as exc:
            await self._retry_later(event, exc)
            return ProcessResult(outcome="failed", notes=(f"delivery failed, will retry: {exc}",))
        except Exception as exc:
            log.exception("pipeline_failed")
            return await self._fail_safe(event, msg, exc)
        finally:
            await self._working(msg, False)

    async def record_staff_message(
        self, *, team: str, channel: str, thread_ts: str, user: str, text: str, ts: str
    ) -> bool:
        """A staff member wrote in a bot thread: the human takes it over and the bot goes quiet."""
        now = self.clock.now()
        async with self.db.sessions.begin() as session:
            conversation = await repo.find_conversation(session, team=team, channel=channel, thread_ts=thread_ts)
            if conversation is None:
                return False
            if await repo.find_message(session, conversation.id, ts) is None:
                await repo.add_message(session, conversation_id=conversation.id, role="staff", user=user,
                                       ts=ts, text=text, now=now)
                # A person answering after a page stops the first-human-response clock.
                await clocks.meet(session, conversation_id=conversation.id, metric="first_human_response", at=now)
            if conversation.state != ConversationState.TAKEN_OVER:
                await repo.set_conversation_state(session, conversation.id, ConversationState.TAKEN_OVER, now=now,
                                                  by=user)
                log.info("thread_taken_over", conversation_id=conversation.id, staff=user)
        return True

    async def is_bot_thread(self, team: str, channel: str, thread_ts: str) -> bool:
        """The bot answers in this thread, or accepted its first message and has not got to it yet."""
        async with self.db.sessions() as session:
            found = await repo.find_conversation(session, team=team, channel=channel, thread_ts=thread_ts)
            if found is None:
                # Under load the conversation row appears only when a worker picks the root message up;
                # the root's inbox row (key as in InboundMessage.dedupe_key) is there from the ack on.
                root_key = f"{team}:{channel}:{thread_ts}"
                accepted = await session.scalar(select(InboundEvent.id).where(InboundEvent.dedupe_key == root_key))
                return accepted is not None
        return True

    # --- the steps ----------------------------------------------------------------------------

    async def _run(self, event: InboundEvent, msg: InboundMessage, loaded: LoadedThread) -> ProcessResult:
        thread = loaded.thread
        # An answer decided before and not delivered yet (Slack refused it, a crash) is still owed: this
        # message's own escalation made the thread "escalated", and its notice must not be swallowed by that.
        undelivered = event.reply_intent is not None and thread.state is ConversationState.ESCALATED
        if thread.state.person_has_it and not undelivered:
            await self._finish(event, outcome="quiet")
            return ProcessResult(outcome="quiet", notes=(f"a person has this thread ({thread.state})",))
        if self.config.bot.ignore_pleasantries and (loaded.thanked or PLEASANTRY.match(msg.text.strip())):
            await self._finish(event, outcome="ignored")
            note = "thanks: the thread is resolved" if loaded.thanked else "pleasantry, no reply needed"
            return ProcessResult(outcome="ignored", notes=(note,))
        if loaded.joined_late:
            thread = dataclasses.replace(thread, history=tuple(await self._earlier_in_slack(msg)))

        decision, decision_id = await self._route(event, msg, thread, loaded)
        structlog.contextvars.bind_contextvars(route=decision.route)
        if event.reply_intent is not None:
            # Recovering after a crash mid-delivery: say what was decided then, nothing new.
            outcome: Outcome = event.outcome or "replied"  # type: ignore[assignment]
            handled = Handled(Answer(event.reply_intent, "reply" if outcome == "replied" else "notice",
                                     citations=recorded_citations(loaded.existing),
                                     asks_feedback=outcome == "replied"), outcome)
        else:
            handled = await self._handle(event, msg, thread, decision, decision_id)
        latency_ms = await self._deliver(event, msg, handled, thread.conversation_id, decision_id)
        self.metrics.messages.labels(decision.route, handled.outcome).inc()
        self.metrics.pipeline_latency.labels(handled.outcome).observe(latency_ms / 1000)
        log.info("message_handled", outcome=handled.outcome, decided_by=decision.decided_by,
                 confidence=round(decision.confidence, 3), latency_ms=round(latency_ms, 1))
        return ProcessResult(
            outcome="escalated" if handled.outcome == "escalated" else "replied",
            route=decision.route, confidence=decision.confidence, decided_by=decision.decided_by,
            reason=decision.reason, reply=handled.answer.text, escalation_id=handled.escalation_id, vote=handled.vote,
            citations=handled.answer.citations,
        )

    async def _load_thread(self, session: AsyncSession, msg: InboundMessage, now: datetime) -> LoadedThread:
        """The conversation with its history before this message; the message itself is stored once."""
        conversation = await repo.open_conversation(
            session, source=msg.source, team=msg.team, channel=msg.channel, thread_ts=msg.root_ts,
            user=msg.user, now=now, likely_new=msg.thread_ts is None)
        created = conversation.created
        recent = [] if created else await repo.thread_messages(session, conversation.id, limit=50)
        stored = next((m for m in recent if m.ts == msg.ts and m.role == "user"), None)
        if stored is None and not created:
            stored = await repo.find_message(session, conversation.id, msg.ts)
        existing = None
        thanked = False
        if stored is None:
            message_id = await repo.add_message(
                session, conversation_id=conversation.id, role="user", user=msg.user, ts=msg.ts, text=msg.text,
                event_id=msg.event_id, now=now, touch=False)
            if not created:
                thanked = await asker_wrote(session, self.sla, conversation.id, user=msg.user, text=msg.text,
                                            now=now)
        else:
            message_id = stored.id
            # Seen before: a retry after a crash keeps the decision already made and logged.
            existing = await repo.decision_for_message(session, message_id)
        history = tuple(Turn(role=m.role, text=m.text, user=m.user)  # type: ignore[arg-type]
                        for m in recent if m.id < message_id)
        return LoadedThread(
            thread=ThreadState(conversation_id=conversation.id, history=history,
                               state=ConversationState(conversation.state)),
            message_id=message_id,
            existing=existing,
            # Mentioned mid-thread: the earlier messages are only in Slack.
            joined_late=created and msg.thread_ts is not None,
            thanked=thanked,
        )

    async def _earlier_in_slack(self, msg: InboundMessage) -> list[Turn]:
        try:
            turns = await self.chat.thread_history(msg.channel, msg.root_ts)
        except TransportError as exc:
            log.warning("thread_history_unavailable", error=str(exc))
            return []
        return [turn for turn in turns if turn.text != msg.text]

    async def _route(self, event: InboundEvent, msg: InboundMessage, thread: ThreadState,
                     loaded: LoadedThread) -> tuple[RouteDecision, int]:
        existing = loaded.existing
        if existing is not None:
            return RouteDecision(route=existing.route, confidence=existing.confidence,
                                 decided_by=existing.decided_by,  # type: ignore[arg-type]
                                 reason=existing.reason, scores=existing.scores), existing.id
        context = RoutingContext(history=tuple(t.text for t in thread.history if t.role == "user"),
                                 conversation_id=thread.conversation_id)
        decision = await self.router.route(msg.text, context)
        if decision.route not in self.handlers:
            decision = dataclasses.replace(
                decision, route=self.config.fallback_route,
                reason=f"{decision.reason}; unknown route {decision.route!r} replaced by the fallback")
        async with self.db.sessions.begin() as session:
            decision_id = await repo.add_decision(session, DecisionRecord(
                conversation_id=thread.conversation_id, message_id=loaded.message_id, route=decision.route,
                confidence=decision.confidence, decided_by=decision.decided_by, reason=decision.reason[:4000],
                scores={k: round(v, 4) for k, v in decision.scores.items()},
                router_mode=getattr(self.router, "name", "custom"), router_latency_ms=decision.latency_ms,
                llm_calls=decision.llm_calls, created_at=self.clock.now()))
            if not loaded.thread.history:
                # The customer's first message: the first-response clock runs from its receipt.
                await start_clock(session, self.sla, "first_response", conversation_id=thread.conversation_id,
                                  escalation_id=None, route=decision.route, channel=msg.channel,
                                  started_at=event.received_at)
        return decision, decision_id

    async def _handle(
        self, event: InboundEvent, msg: InboundMessage, thread: ThreadState, decision: RouteDecision,
        decision_id: int,
    ) -> Handled:
        handler = self.handlers[decision.route]
        if handler.escalates:
            trigger: Trigger = "rule" if decision.decided_by == "rules" else "route"
            escalation_id = await self._escalate(msg, thread, decision, decision_id, trigger, decision.reason)
            return Handled(Answer(handler.acknowledgement(), "notice"), "escalated", escalation_id)
        grounding = await self._ground(msg, decision.route, decision_id)
        if grounding is not None and grounding.missing and self.config.knowledge.on_missing == "escalate":
            escalation_id = await self._escalate(msg, thread, decision, decision_id, "no_docs",
                                                 "the team's docs do not cover this question")
            return Handled(Answer(NO_DOCS_ESCALATED, "notice"), "escalated", escalation_id)
        stream = None
        try:
            vote_reason = self.voter.reason_to_vote(handler, msg.text, decision.confidence)
            if vote_reason is not None:
                return await self._vote(msg, thread, decision, decision_id, handler, vote_reason, grounding)
            stream = self._streamer(event, msg)
            if stream is not None and grounding is not None and grounding.missing:
                await stream.write(NO_DOCS_NOTE + "\n\n")
            draft = await handler.draft(self.llm, thread.history, msg.text, conversation_id=thread.conversation_id,
                                        stream_to=stream, grounding=grounding)
        except LLMError as exc:
            log.warning("llm_failed", kind=exc.kind, error=str(exc))
            escalation_id = await self._escalate(msg, thread, decision, decision_id, "llm_failure",
                                                 f"the LLM failed ({exc.kind}): {exc}")
            return Handled(Answer(LLM_DOWN_NOTE, "notice"), "escalated", escalation_id, stream=stream)
        if not draft.text:
            escalation_id = await self._escalate(msg, thread, decision, decision_id, "llm_failure",
                                                 "the LLM returned an empty reply")
            return Handled(Answer(LLM_DOWN_NOTE, "notice"), "escalated", escalation_id, stream=stream)
        return Handled(grounded_answer(draft.text, grounding), "replied", stream=stream)

    async def _ground(self, msg: InboundMessage, route: str, decision_id: int) -> Grounding | None:
        """The team's docs on the question, recorded with the decision; None when the route has none (or the
        knowledge base fails: the persona then answers as it did before knowledge existed)."""
        if self.knowledge is None:
            return None
        try:
            grounding = await self.knowledge.ground(msg.text, route)
        except Exception as exc:  # a broken index must not cost the customer an answer
            log.warning("knowledge_unavailable", error=f"{type(exc).__name__}: {exc}"[:300])
            return None
        if grounding is not None:
            async with self.db.sessions.begin() as session:
                await repo.set_grounding(session, decision_id, grounding="missing" if grounding.missing
                                         else "documents", sources=grounding.as_record())
        return grounding

    def _streamer(self, event: InboundEvent, msg: InboundMessage) -> AnswerStreamer | None:
        """A streamer for this message's answer, when the chat streams and no earlier attempt started one."""
        if not (self.config.slack.streaming and self.chat.capabilities.streams) or event.stream_ts is not None:
            return None

        async def record(stream: PostedMessage) -> None:
            async with self.db.sessions.begin() as session:
                await repo.set_stream(session, event.id, owner=self.instance_id, ts=stream.ts)

        return AnswerStreamer(self.chat, msg, interval_s=self.config.slack.stream_interval_s, on_start=record)

    async def _vote(
        self, msg: InboundMessage, thread: ThreadState, decision: RouteDecision, decision_id: int,
        handler: PersonaHandler, vote_reason: str, grounding: Grounding | None,
    ) -> Handled:
        started = self.clock.monotonic()
        result = await self.voter.vote(handler, thread.history, msg.text, conversation_id=thread.conversation_id,
                                       grounding=grounding)
        async with self.db.sessions.begin() as session:
            await repo.add_vote(session, Vote(
                decision_id=decision_id, strategy=result.strategy, samples_requested=len(result.samples),
                majority=result.majority, agreement=result.agreement, escalated=result.escalate,
                chosen=result.chosen, reason=f"{vote_reason}; {result.reason}",
                latency_ms=(self.clock.monotonic() - started) * 1000, created_at=self.clock.now(),
            ), [VoteSampleRow(index=s.index, verdict=s.verdict, draft=s.draft, reason=s.reason,
                              llm_call_id=s.llm_call_id) for s in result.samples])
        if result.escalate or result.chosen is None:
            drafts = tuple(dict.fromkeys(s.draft for s in result.samples if s.draft))
            # No sample answered at all: that is an outage, and the user is told so.
            outage = result.majority == "error"
            escalation_id = await self._escalate(msg, thread, decision, decision_id,
                                                 "llm_failure" if outage else "vote", result.reason, drafts=drafts)
            return Handled(Answer(LLM_DOWN_NOTE if outage else VOTE_NOTE, "notice"), "escalated", escalation_id,
                           vote=result)
        return Handled(grounded_answer(result.chosen, grounding), "replied", vote=result)

    async def _escalate(
        self, msg: InboundMessage, thread: ThreadState, decision: RouteDecision | None, decision_id: int | None,
        trigger: Trigger, reason: str, *, drafts: tuple[str, ...] = (),
    ) -> int:
        return await self.escalations.escalate(EscalationRequest(
            msg=msg, conversation_id=thread.conversation_id, trigger=trigger, reason=reason,
            decision_id=decision_id, route=decision.route if decision else None,
            confidence=decision.confidence if decision else None, drafts=drafts))

    async def _deliver(
        self, event: InboundEvent, msg: InboundMessage, handled: Handled, conversation_id: int | None,
        decision_id: int | None, *, error: str | None = None,
    ) -> float:
        """Post the reply exactly once: the intent is written first, so a crash is detected later.

        Returns the latency from receipt to delivery, which is recorded with the outcome."""
        if event.reply_intent is not None:
            posted = await self.chat.find_answer(msg)
        else:
            posted = None
            async with self.db.sessions.begin() as session:
                await repo.set_reply_intent(session, event.id, handled.answer.text, outcome=handled.outcome)
        if posted is None:
            posted = await self._post(event, msg, handled)
        now = self.clock.now()
        latency_ms = (now - event.received_at).total_seconds() * 1000
        async with self.db.sessions.begin() as session:
            await repo.complete_inbound(session, event.id, owner=self.instance_id, reply_ts=posted.ts,
                                        outcome=handled.outcome, now=now, error=error)
            if conversation_id is not None:
                await repo.add_message(session, conversation_id=conversation_id, role="assistant",
                                       text=handled.answer.text, ts=posted.ts, now=now)
                await clocks.meet(session, conversation_id=conversation_id, metric="first_response", at=now)
            if decision_id is not None:
                await repo.finish_decision(session, decision_id, outcome=handled.outcome,
                                           reply_text=handled.answer.text, reply_ts=posted.ts,
                                           escalated=handled.outcome == "escalated", latency_ms=latency_ms)
        return latency_ms

    async def _post(self, event: InboundEvent, msg: InboundMessage, handled: Handled) -> PostedMessage:
        """The answer into the thread: ending this attempt's stream, or a stream an earlier attempt left
        open (it is replaced), or as a new message."""
        if handled.stream is not None:
            finished = await handled.stream.finish(handled.answer)
            if finished is not None:
                return finished
        if event.stream_ts is not None:
            return await self.chat.finish_stream(msg, PostedMessage(msg.channel, event.stream_ts), handled.answer,
                                                 shown=None)
        return await self.chat.post_answer(msg, handled.answer)

    # --- endings --------------------------------------------------------------------------------

    async def _finish(self, event: InboundEvent, *, outcome: str, status: str = "done",
                      error: str | None = None) -> None:
        async with self.db.sessions.begin() as session:
            await repo.finish_inbound(session, event.id, owner=self.instance_id, outcome=outcome,
                                      now=self.clock.now(), status=status, error=error)

    async def _retry_later(self, event: InboundEvent, exc: Exception) -> None:
        if event.attempts >= MAX_ATTEMPTS:
            log.error("message_given_up", attempts=event.attempts, error=str(exc))
            await self._finish(event, outcome="failed", status="failed", error=str(exc)[:2000])
            self.metrics.messages.labels("unknown", "failed").inc()
            return
        delay = RETRY_BACKOFF_S[min(event.attempts - 1, len(RETRY_BACKOFF_S) - 1)]
        log.warning("message_retry_scheduled", attempts=event.attempts, retry_in_s=delay, error=str(exc))
        async with self.db.sessions.begin() as session:
            await repo.release_inbound(session, event.id, owner=self.instance_id,
                                       retry_at=self.clock.now() + timedelta(seconds=delay), error=str(exc)[:2000])

    async def _fail_safe(self, event: InboundEvent, msg: InboundMessage, exc: Exception) -> ProcessResult:
        """A bug or an outage mid-way: tell the user honestly and page a human, never stay silent."""
        escalation_id = None
        try:
            async with self.db.sessions() as session:
                fresh = await session.get(InboundEvent, event.id, populate_existing=True)
            if fresh is not None and fresh.reply_ts is not None:
                # The failure came after the reply went out: nothing more to say.
                await self._finish(event, outcome=fresh.outcome or "replied", error=f"{type(exc).__name__}: {exc}")
                return ProcessResult(outcome="replied", notes=(f"{type(exc).__name__}: {exc}",))
            event = fresh or event
            async with self.db.sessions() as session:
                conversation = await repo.find_conversation(session, team=msg.team, channel=msg.channel,
                                                            thread_ts=msg.root_ts)
            conversation_id = conversation.id if conversation is not None else None
            if conversation is not None:
                thread = ThreadState(conversation_id=conversation.id, history=(),
                                     state=ConversationState(conversation.state))
                escalation_id = await self._escalate(msg, thread, None, None, "failure",
                                                     f"internal error: {type(exc).__name__}: {exc}")
            await self._deliver(event, msg, Handled(Answer(FAILURE_NOTE, "notice"), "escalated", escalation_id),
                                conversation_id, None, error=f"{type(exc).__name__}: {exc}")
        except Exception as second:
            log.exception("fail_safe_failed")
            await self._retry_later(event, second)
            return ProcessResult(outcome="failed", notes=(f"{type(exc).__name__}: {exc}",))
        self.metrics.messages.labels("unknown", "failed").inc()
        return ProcessResult(outcome="escalated", reply=FAILURE_NOTE, escalation_id=escalation_id,
                             notes=(f"{type(exc).__name__}: {exc}",))

    async def _working(self, msg: InboundMessage, working: bool) -> None:
        try:
            await self.chat.set_working(msg, working)
        except Exception as exc:  # a missing reaction must never cost a reply
            log.warning("working_indicator_failed", error=str(exc))
