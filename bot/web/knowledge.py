"""The dashboard's Knowledge pages: the sources and the coverage gaps (unanswered questions grouped by theme), and
the Proposals view where reviewers approve, edit or reject the answers people gave in resolved escalations."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bot.knowledge.errors import KnowledgeError, ProposalNotFound
from bot.vocabulary import ProposalStatus, values
from bot.web.dashboard import REVIEWER_DEFAULT, Dashboard, json_object
from bot.when import parse_when
from storage import coverage
from storage import knowledge as sources_repo
from storage import proposals as records
from storage.models import KnowledgeProposal, parse_row_id

if TYPE_CHECKING:
    from bot.knowledge.proposals import ProposalReview

# Coverage gaps look back this far unless the page is asked for another window (?since=7d).
GAPS_SINCE = "30d"
# A theme shows this many of its questions; its count says how many there are.
THEME_EXAMPLES = 5
PROPOSAL_STATUSES: tuple[str, ...] = values(ProposalStatus)


@dataclass(frozen=True)
class GapTheme:
    """Unanswered questions about one thing: the most central one stands for them."""

    questions: list[coverage.GapQuestion]
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def representative(self) -> coverage.GapQuestion:
        return self.questions[0]

    def as_json(self) -> dict[str, Any]:
        return {"question": self.representative.text, "count": len(self.questions), "reasons": dict(self.reasons),
                "routes": dict(Counter(q.route for q in self.questions)),
                "examples": [{"decision_id": q.decision_id, "conversation_id": q.conversation_id, "text": q.text,
                              "reasons": list(q.reasons), "created_at": q.created_at.isoformat()}
                             for q in self.questions[:THEME_EXAMPLES]]}


def gap_themes(questions: Sequence[coverage.GapQuestion]) -> list[GapTheme]:
    """The questions grouped by theme, the largest theme first."""
    from bot.knowledge.themes import group_by_theme

    themes = []
    for theme in group_by_theme([q.text for q in questions]):
        members = [questions[i] for i in theme.members]
        themes.append(GapTheme(members, Counter(reason for q in members for reason in q.reasons)))
    return themes


@dataclass
class ProposalDesk:
    """The review service, made on first use: approving loads the knowledge base's embedding table."""

    dashboard: Dashboard
    _review: ProposalReview | None = None

    @property
    def review(self) -> ProposalReview:
        if self._review is None:
            from bot.knowledge.proposals import ProposalReview

            runtime = self.dashboard.runtime
            self._review = ProposalReview(runtime.db, runtime.knowledge.knowledge_base(), runtime.clock.now)
        return self._review


def add_knowledge_routes(app: web.Application, dashboard: Dashboard) -> None:
    desk = ProposalDesk(dashboard)
    page = dashboard.guard
    app.router.add_get("/knowledge", page(partial(_knowledge, dashboard), page=True))
    app.router.add_get("/knowledge/proposals", page(partial(_proposals, desk), page=True))
    app.router.add_post("/knowledge/proposals/{id:\\d+}/{verdict:approve|reject}",
                        page(partial(_decide_form, desk), page=True))
    app.router.add_get("/api/knowledge", page(partial(_api_knowledge, dashboard), page=False))
    app.router.add_get("/api/proposals", page(partial(_api_proposals, desk), page=False))
    app.router.add_post("/api/proposals/{id:\\d+}/{verdict:approve|reject}",
                        page(partial(_decide_api, desk), page=False))


# --- the Knowledge page ---------------------------------------------------------------------------------------


async def _coverage(dashboard: Dashboard, request: web.Request) -> tuple[
    list[sources_repo.SourceSummary], list[GapTheme], int, str, str | None
]:
    raw_since = request.query.get("since", GAPS_SINCE)
    now = dashboard.runtime.clock.now()
    error = None
    try:
        since = parse_when(raw_since, now)
    except ValueError as exc:
        error, since, raw_since = str(exc), parse_when(GAPS_SINCE, now), GAPS_SINCE
    async with dashboard.runtime.db.sessions() as session:
        sources = await sources_repo.list_sources(session)
        questions = await coverage.unanswered_questions(session, since=since)
    return sources, gap_themes(questions), len(questions), raw_since, error


async def _knowledge(dashboard: Dashboard, request: web.Request) -> web.StreamResponse:
    sources, themes, total, since, error = await _coverage(dashboard, request)
    async with dashboard.runtime.db.sessions() as session:
        waiting = len(await records.listing(session, status="proposed"))
    return dashboard.render(request, "knowledge.html", 400 if error else 200, sources=sources, themes=themes,
                            total=total, since=since, since_error=error, waiting=waiting,
                            examples=THEME_EXAMPLES, colors=dashboard.colors())


async def _api_knowledge(dashboard: Dashboard, request: web.Request) -> web.StreamResponse:
    sources, themes, total, since, error = await _coverage(dashboard, request)
    if error is not None:
        return web.json_response({"error": f"bad filter: {error}"}, status=400)
    return web.json_response({"sources": [s.as_json() for s in sources], "since": since,
                              "coverage_gaps": {"questions": total, "themes": [t.as_json() for t in themes]}})


# --- the Proposals view ---------------------------------------------------------------------------------------


def _status_filter(query: Mapping[str, str]) -> ProposalStatus | None:
    """?status=proposed|approved|rejected|all; the ones waiting for a reviewer unless told otherwise."""
    status = query.get("status", "proposed")
    if status == "all":
        return None
    return status if status in PROPOSAL_STATUSES else "proposed"  # type: ignore[return-value]


async def _proposals(desk: ProposalDesk, request: web.Request) -> web.StreamResponse:
    dashboard = desk.dashboard
    status = _status_filter(request.query)
    async with dashboard.runtime.db.sessions() as session:
        found = await records.listing(session, status=status)
    done = request.query.get("done")
    return dashboard.render(request, "proposals.html", proposals=found, shown_status=status or "all",
                            statuses=PROPOSAL_STATUSES, done=parse_row_id(done) if done else None,
                            verdict=request.query.get("verdict"), colors=dashboard.colors())


@dataclass(frozen=True)
class Verdict:
    status: int
    message: str
    proposal: KnowledgeProposal | None = None


async def _decide(desk: ProposalDesk, request: web.Request, fields: Mapping[str, Any]) -> Verdict:
    proposal_id = parse_row_id(request.match_info["id"])
    if proposal_id is None:
        return Verdict(404, f"There is no proposed answer #{request.match_info['id'][:20]}.")
    reviewer = " ".join(str(fields.get("reviewer") or "").split())[:64] or REVIEWER_DEFAULT
    review = desk.review
    try:
        if request.match_info["verdict"] == "reject":
            proposal = await review.reject(proposal_id, reviewer=reviewer)
            return Verdict(200, f"Proposal #{proposal_id} rejected: it is not in the knowledge base.", proposal)
        text = fields.get("answer")
        edited = None
        if isinstance(text, str):
            original = await review.proposal(proposal_id)
            # The form always sends the textarea: only a changed text is an edit.
            edited = text if text.strip() != original.indexed_answer.strip() else None
        proposal = await review.approve(proposal_id, reviewer=reviewer, text=edited)
    except ProposalNotFound as exc:
        return Verdict(404, str(exc))
    except KnowledgeError as exc:  # an empty edit; a source named `answers` that is not made of answers
        return Verdict(400, str(exc))
    edit_note = " (edited)" if proposal.edited_answer is not None else ""
    return Verdict(200, f"Proposal #{proposal_id} approved{edit_note}: the bot answers from it now.", proposal)


async def _decide_form(desk: ProposalDesk, request: web.Request) -> web.StreamResponse:
    outcome = await _decide(desk, request, await request.post())
    if outcome.status >= 400:
        return desk.dashboard.error(request, outcome.status, outcome.message, page=True)
    verdict = request.match_info["verdict"]
    proposal_id = request.match_info["id"]
    raise web.HTTPSeeOther(f"/knowledge/proposals?status=all&done={proposal_id}&verdict={verdict}"
                           f"#proposal-{proposal_id}")


async def _decide_api(desk: ProposalDesk, request: web.Request) -> web.StreamResponse:
    from bot.knowledge.proposals import proposal_json

    body = await json_object(request) if request.can_read_body else {}
    if body is None:
        return web.json_response({"error": 'send a JSON object like {"text": "…", "reviewer": "rita"}'}, status=400)
    text = body.get("text")
    if text is not None and not isinstance(text, str):
        return web.json_response({"error": "text must be a string"}, status=400)
    fields = {"reviewer": body.get("reviewer"), **({"answer": text} if text is not None else {})}
    outcome = await _decide(desk, request, fields)
    if outcome.status >= 400:
        return web.json_response({"error": outcome.message}, status=outcome.status)
    assert outcome.proposal is not None
    return web.json_response({"message": outcome.message, "proposal": proposal_json(outcome.proposal)})


async def _api_proposals(desk: ProposalDesk, request: web.Request) -> web.StreamResponse:
    from bot.knowledge.proposals import proposal_json

    async with desk.dashboard.runtime.db.sessions() as session:
        found = await records.listing(session, status=_status_filter(request.query))
    return web.json_response({"proposals": [proposal_json(p) for p in found]})
