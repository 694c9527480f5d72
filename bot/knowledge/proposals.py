"""Reviewing the answers people gave in resolved escalations: approve one (as it is or edited) and it becomes a
document of the source `answers`; reject it and it leaves the index. Nothing is indexed before approval."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog

from bot.knowledge.errors import ProposalError
from bot.knowledge.service import DirectDocument, KnowledgeBase
from bot.vocabulary import TEAM_ANSWERS_SOURCE, ProposalStatus
from storage import proposals as records
from storage.engine import Database
from storage.models import KnowledgeProposal
from storage.proposals import ANSWER_CHARS

log = structlog.get_logger(__name__)

# The question is the document's title, and a title is one line that reads well under an answer.
TITLE_CHARS = 150


def answer_link(proposal: KnowledgeProposal) -> str:
    """Where the indexed answer is cited from: the person's answer in the chat, or (no link known, e.g. in the
    local playground) a name that is unique to the proposal."""
    return proposal.permalink or f"answers/{proposal.id}"


def answer_document(proposal: KnowledgeProposal) -> DirectDocument:
    """One document per approved answer: the question is its title, question and answer its text."""
    question = " ".join(proposal.question.split())
    title = question if len(question) <= TITLE_CHARS else question[: TITLE_CHARS - 1] + "…"
    return DirectDocument(link=answer_link(proposal), title=title,
                          text=f"Question: {proposal.question.strip()}\n\nAnswer: {proposal.indexed_answer.strip()}")


def proposal_json(proposal: KnowledgeProposal) -> dict[str, Any]:
    return {"id": proposal.id, "conversation_id": proposal.conversation_id, "escalation_id": proposal.escalation_id,
            "route": proposal.route, "question": proposal.question, "answer": proposal.answer,
            "answered_by": proposal.answered_by, "edited_answer": proposal.edited_answer,
            "indexed_answer": proposal.indexed_answer if proposal.status == "approved" else None,
            "permalink": proposal.permalink, "status": proposal.status, "reviewer": proposal.reviewer,
            "created_at": proposal.created_at.isoformat(),
            "decided_at": proposal.decided_at.isoformat() if proposal.decided_at else None}


class ProposalReview:
    """List, approve and reject proposed answers (the CLI and the dashboard share this)."""

    def __init__(self, db: Database, knowledge: KnowledgeBase, now: Callable[[], datetime]) -> None:
        self._db = db
        self._knowledge = knowledge
        self._now = now

    async def proposals(self, status: ProposalStatus | None = None, *, limit: int = 200) -> list[KnowledgeProposal]:
        async with self._db.sessions() as session:
            return await records.listing(session, status=status, limit=limit)

    async def approve(self, proposal_id: int, *, reviewer: str, text: str | None = None) -> KnowledgeProposal:
        """Index the answer (the reviewer's `text` in place of the person's words, when given); approving an
        approved one again replaces what is indexed."""
        edited = None
        if text is not None:
            edited = text.strip()
            if not edited:
                raise ProposalError("the edited answer is empty: give the text to index, or leave --text out")
            if len(edited) > ANSWER_CHARS:
                raise ProposalError(f"the edited answer is {len(edited)} characters long; keep it under "
                                    f"{ANSWER_CHARS}")
        proposal = await self._get(proposal_id)
        if edited is not None:
            proposal.edited_answer = edited
        # Indexed first: a proposal marked approved is always in the index (a failure leaves it as it was).
        await self._knowledge.index_documents(TEAM_ANSWERS_SOURCE, [answer_document(proposal)])
        async with self._db.sessions.begin() as session:
            await records.decide(session, proposal_id, status="approved", reviewer=reviewer, edited_answer=edited,
                                 now=self._now())
        log.info("knowledge_proposal_approved", proposal_id=proposal_id, reviewer=reviewer, edited=edited is not None)
        return await self._get(proposal_id)

    async def reject(self, proposal_id: int, *, reviewer: str) -> KnowledgeProposal:
        """Keep the answer out of the index (taking it out when it was approved before)."""
        proposal = await self._get(proposal_id)
        if proposal.status == "approved":
            await self._knowledge.remove_documents(TEAM_ANSWERS_SOURCE, [answer_link(proposal)])
        async with self._db.sessions.begin() as session:
            await records.decide(session, proposal_id, status="rejected", reviewer=reviewer, edited_answer=None,
                                 now=self._now())
        log.info("knowledge_proposal_rejected", proposal_id=proposal_id, reviewer=reviewer)
        return await self._get(proposal_id)

    async def _get(self, proposal_id: int) -> KnowledgeProposal:
        async with self._db.sessions() as session:
            proposal = await records.get(session, proposal_id)
        if proposal is None:
            raise ProposalError(f"there is no proposed answer #{proposal_id} (see `supportbot kb proposals`)")
        return proposal
