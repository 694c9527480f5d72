"""Learning from the people: when an escalation is resolved, the answer the team gave in its thread becomes a
proposed knowledge entry, which a reviewer approves, edits or rejects before anything is indexed."""

from __future__ import annotations

import structlog

from bot.clock import Clock
from bot.ports import ChatPort
from storage import proposals as records
from storage.engine import Database

log = structlog.get_logger(__name__)


async def propose_answer(db: Database, chat: ChatPort, clock: Clock, escalation_id: int) -> int | None:
    """Propose what the team answered in the escalation's thread; the proposal's id, or None when nobody from
    the team wrote there after the page (then there is nothing to learn)."""
    async with db.sessions() as session:
        found = await records.thread_answer(session, escalation_id)
    if found is None:
        log.info("no_answer_to_propose", escalation_id=escalation_id)
        return None
    permalink = found.page_permalink
    if found.answer_ts is not None:
        try:
            permalink = await chat.permalink(found.channel, found.answer_ts) or permalink
        except Exception as exc:  # the thread's link will do
            log.warning("permalink_unavailable", channel=found.channel, ts=found.answer_ts, error=str(exc))
    async with db.sessions.begin() as session:
        proposal_id = await records.add(session, found, permalink=permalink, now=clock.now())
    log.info("knowledge_proposed", escalation_id=escalation_id, proposal_id=proposal_id)
    return proposal_id
