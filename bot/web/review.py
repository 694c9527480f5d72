"""The conversation page's view of the record: each user message with its decision, votes, LLM calls, escalations."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from storage.models import AnswerFeedback, DecisionRecord, Escalation, LLMCall, Message, RouteCorrection, Vote
from storage.review import ConversationReview, LLMCallFact


@dataclass
class DecisionView:
    decision: DecisionRecord
    votes: list[Vote] = field(default_factory=list)
    # 👍/👎 on this decision's answer, the asker's first.
    feedback: list[AnswerFeedback] = field(default_factory=list)

    @property
    def latest_correction(self) -> RouteCorrection | None:
        return self.decision.corrections[-1] if self.decision.corrections else None

    @property
    def route(self) -> str:
        correction = self.latest_correction
        return correction.new_route if correction else self.decision.route

    @property
    def decided_by(self) -> str:
        return "correction" if self.latest_correction else self.decision.decided_by


@dataclass
class MessageView:
    message: Message
    decision: DecisionView | None = None


def thread_view(review: ConversationReview) -> list[MessageView]:
    votes: dict[int, list[Vote]] = {}
    for vote in review.votes:
        votes.setdefault(vote.decision_id, []).append(vote)
    ratings: dict[int, list[AnswerFeedback]] = {}
    for rating in sorted(review.feedback, key=lambda f: not f.from_asker):
        ratings.setdefault(rating.decision_id, []).append(rating)
    by_message = {d.message_id: DecisionView(d, votes.get(d.id, []), ratings.get(d.id, [])) for d in review.decisions}
    return [MessageView(message, by_message.get(message.id)) for message in review.messages]


def call_fact(call: LLMCall) -> LLMCallFact:
    return LLMCallFact(call.created_at, call.purpose, call.model, call.route, call.input_tokens, call.output_tokens,
                       call.cache_read_tokens, call.cache_creation_tokens, call.latency_ms, call.error is not None,
                       call.provider)


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()


def decision_json(view: DecisionView) -> dict[str, Any]:
    d = view.decision
    return {
        "id": d.id, "message_id": d.message_id, "route": view.route, "original_route": d.route,
        "confidence": round(d.confidence, 4), "decided_by": view.decided_by,
        "original_decided_by": d.decided_by, "reason": d.reason,
        "scores": {route: round(float(score), 4) for route, score in (d.scores or {}).items()},
        "router_mode": d.router_mode, "router_latency_ms": round(d.router_latency_ms, 2), "llm_calls": d.llm_calls,
        "outcome": d.outcome, "reply": d.reply_text, "escalated": d.escalated, "voted": d.voted,
        "vote_agreement": d.vote_agreement, "latency_ms": None if d.latency_ms is None else round(d.latency_ms, 1),
        "grounding": d.grounding, "sources": list(d.sources or []),
        "created_at": _iso(d.created_at),
        "corrections": [
            {"old_route": c.old_route, "new_route": c.new_route, "reviewer": c.reviewer, "note": c.note,
             "created_at": _iso(c.created_at)} for c in d.corrections
        ],
        "votes": [vote_json(vote) for vote in view.votes],
        "feedback": [
            {"user": f.user, "value": f.value, "from_asker": f.from_asker, "reason": f.reason,
             "updated_at": _iso(f.updated_at)} for f in view.feedback
        ],
    }


def vote_json(vote: Vote) -> dict[str, Any]:
    return {
        "strategy": vote.strategy, "samples_requested": vote.samples_requested, "majority": vote.majority,
        "agreement": vote.agreement, "escalated": vote.escalated, "chosen": vote.chosen, "reason": vote.reason,
        "latency_ms": round(vote.latency_ms, 1),
        "samples": [{"index": s.index, "verdict": s.verdict, "draft": s.draft, "reason": s.reason}
                    for s in vote.samples],
    }


def escalation_json(escalation: Escalation) -> dict[str, Any]:
    return {
        "id": escalation.id, "state": escalation.state, "trigger": escalation.trigger, "reason": escalation.reason,
        "route": escalation.route, "confidence": escalation.confidence, "requester": escalation.requester,
        "summary": escalation.summary, "level": escalation.level, "repage_count": escalation.repage_count,
        "page_channel": escalation.page_channel, "page_ts": escalation.page_ts,
        "acknowledged_by": escalation.acknowledged_by, "acknowledged_at": _iso(escalation.acknowledged_at),
        "resolved_by": escalation.resolved_by, "resolved_at": _iso(escalation.resolved_at),
        "created_at": _iso(escalation.created_at), "drafts": list(escalation.drafts or []),
        "events": [{"from_state": e.from_state, "to_state": e.to_state, "actor": e.actor, "note": e.note,
                    "at": _iso(e.at)} for e in escalation.events],
    }


def review_json(review: ConversationReview, cost: Mapping[int, float | None]) -> dict[str, Any]:
    conversation = review.conversation
    return {
        "conversation": {
            "id": conversation.id, "source": conversation.source, "team": conversation.team,
            "channel": conversation.channel, "thread_ts": conversation.thread_ts, "user": conversation.user,
            "state": conversation.state, "taken_over_by": conversation.taken_over_by,
            "resolution": conversation.resolution, "resolution_basis": conversation.resolution_basis,
            "resolved_at": _iso(conversation.resolved_at),
            "created_at": _iso(conversation.created_at), "updated_at": _iso(conversation.updated_at),
        },
        "messages": [
            {"id": view.message.id, "role": view.message.role, "user": view.message.user, "ts": view.message.ts,
             "text": view.message.text, "created_at": _iso(view.message.created_at),
             "decision": decision_json(view.decision) if view.decision else None}
            for view in thread_view(review)
        ],
        "llm_calls": [
            {"id": c.id, "purpose": c.purpose, "provider": c.provider, "model": c.model, "route": c.route,
             "input_tokens": c.input_tokens, "output_tokens": c.output_tokens,
             "cache_read_tokens": c.cache_read_tokens, "cache_creation_tokens": c.cache_creation_tokens,
             "latency_ms": round(c.latency_ms, 1), "stop_reason": c.stop_reason, "error": c.error,
             "estimated_cost_usd": cost.get(c.id), "created_at": _iso(c.created_at)}
            for c in review.llm_calls
        ],
        "escalations": [escalation_json(e) for e in review.escalations],
    }
