"""Learning from the people: a resolved escalation's answer is proposed, and only an approved one is searched
(as the source `answers`); an edit replaces what is indexed, a rejection takes it out. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from sqlalchemy import select

from bot.clock import ManualClock
from bot.config import Config
from bot.knowledge.errors import KnowledgeError, ProposalError
from bot.knowledge.proposals import ProposalReview
from bot.knowledge.service import KnowledgeBase
from bot.runtime import Runtime
from storage.models import KnowledgeProposal
from tests.conftest import config_with
from tests.escalation.conftest import Factory, customer_message
from tests.knowledge.conftest import write_docs
from tests.knowledge.test_kb_cli import kb, operator_env

QUESTION = "Do you sign a HIPAA business associate agreement for the enterprise plan?"
ANSWER = "Yes: enterprise customers can sign our BAA. Email legal@quillpad.example and we send it within two days."
ASKED_AGAIN = "will you sign a HIPAA BAA with us?"
# A rule pages on-call for compliance questions; on-call may answer in the thread.
PROPOSALS_TOML = """
[router]
mode = "rules"
[[router.rules]]
name = "compliance"
route = "escalate"
pattern = '(?i)\\bhipaa\\b'
[bot]
staff = ["U0STAFF"]
support_channels = ["C0SUPPORT"]
[escalation]
oncall = ["U0ALICE"]
channel = "C0ESC"
[knowledge]
min_score = 0.3
"""


def proposals_config() -> Config:
    return config_with(PROPOSALS_TOML)


async def answered_and_resolved(runtime: Runtime, clock: ManualClock, *, answer: str | None = ANSWER) -> int:
    """A customer asks, on-call is paged, (answers in the thread,) and resolves; the escalation id."""
    msg = customer_message(QUESTION)
    escalation_id = (await runtime.pipeline.handle(msg)).escalation_id
    assert escalation_id is not None
    clock.advance(120)
    if answer is not None:
        await runtime.pipeline.record_staff_message(team=msg.team, channel=msg.channel, thread_ts=msg.ts,
                                                    user="U0ALICE", text=answer, ts="1700000300.000001")
    clock.advance(60)
    assert await runtime.escalations.resolve(escalation_id, "U0ALICE") == "done"
    return escalation_id


def review_of(runtime: Runtime, clock: ManualClock) -> ProposalReview:
    return ProposalReview(runtime.db, KnowledgeBase(runtime.db, runtime.config, clock=clock), clock.now)


async def test_an_approved_answer_is_searched_an_edit_replaces_it_and_a_rejection_removes_it(
    make_runtime: Factory, clock: ManualClock, database_url: str,
) -> None:
    runtime = await make_runtime(proposals_config(), database_url=database_url)
    escalation_id = await answered_and_resolved(runtime, clock)
    review = review_of(runtime, clock)
    # Another process's view of the index (another replica): it re-reads the index state within a second.
    kb = KnowledgeBase(runtime.db, runtime.config, clock=clock)

    [proposal] = await review.proposals()
    assert (proposal.escalation_id, proposal.status, proposal.route) == (escalation_id, "proposed", "escalate")
    assert (proposal.question, proposal.answer, proposal.answered_by) == (QUESTION, ANSWER, "U0ALICE")
    # Nothing is indexed before approval.
    assert not await kb.has_sources()

    approved = await review.approve(proposal.id, reviewer="rita")
    assert (approved.status, approved.reviewer, approved.edited_answer) == ("approved", "rita", None)
    clock.advance(2)
    found = await kb.search(ASKED_AGAIN)
    assert not found.abstained
    [hit] = found.hits
    assert (hit.source_name, hit.title, hit.source) == ("answers", QUESTION, f"answers/{proposal.id}")
    assert "legal@quillpad.example" in hit.text and QUESTION in hit.text

    # The reviewer takes the e-mail address out: the edit is what is indexed now, in place of the first text.
    edited = await review.approve(proposal.id, reviewer="rita", text="Yes: enterprise customers can sign our BAA; "
                                                                     "ask your account manager for it.")
    assert edited.edited_answer is not None and edited.answer == ANSWER
    clock.advance(2)
    [hit] = (await kb.search(ASKED_AGAIN)).hits
    assert "account manager" in hit.text and "legal@" not in hit.text
    assert [(s.name, s.documents) for s in await kb.sources()] == [("answers", 1)]

    rejected = await review.reject(proposal.id, reviewer="sam")
    assert (rejected.status, rejected.reviewer) == ("rejected", "sam")
    assert [(s.name, s.documents, s.passages) for s in await kb.sources()] == [("answers", 0, 0)]
    clock.advance(2)
    assert (await kb.search(ASKED_AGAIN)).hits == ()


async def test_no_answer_in_the_thread_means_no_proposal_and_a_replayed_resolve_proposes_once(
    make_runtime: Factory, clock: ManualClock, database_url: str,
) -> None:
    runtime = await make_runtime(proposals_config(), database_url=database_url)
    silent = await answered_and_resolved(runtime, clock, answer=None)
    assert await runtime.escalations.resolve(silent, "U0ALICE") == "already"
    async with runtime.db.sessions() as session:
        assert (await session.execute(select(KnowledgeProposal))).scalars().all() == []


async def test_bad_review_input_gets_a_clear_error_and_changes_nothing(
    make_runtime: Factory, clock: ManualClock, tmp_path: Path,
) -> None:
    runtime = await make_runtime(proposals_config())
    await answered_and_resolved(runtime, clock)
    review = review_of(runtime, clock)
    [proposal] = await review.proposals()
    for attempt, message in ((review.approve(proposal.id, reviewer="rita", text="   "), "empty"),
                             (review.approve(999, reviewer="rita"), "no proposed answer #999"),
                             (review.reject(999, reviewer="rita"), "no proposed answer #999")):
        try:
            await attempt
        except ProposalError as exc:
            assert message in str(exc)
        else:
            raise AssertionError(f"expected a ProposalError about {message!r}")
    [unchanged] = await review.proposals("proposed")
    assert unchanged.edited_answer is None and not await KnowledgeBase(runtime.db, runtime.config).has_sources()

    # Someone named a folder of docs `answers`: approving says why it cannot, and the proposal stays proposed.
    await KnowledgeBase(runtime.db, runtime.config).add([str(write_docs(tmp_path / "docs"))], name="answers")
    try:
        await review.approve(proposal.id, reviewer="rita")
    except KnowledgeError as exc:
        assert "fetched from files or the web" in str(exc)
    else:
        raise AssertionError("expected a KnowledgeError")
    assert [p.status for p in await review.proposals()] == ["proposed"]


async def test_reviewers_list_approve_with_an_edit_and_reject_through_the_cli(
    make_runtime: Factory, clock: ManualClock, sqlite_url: str,
) -> None:
    runtime = await make_runtime(proposals_config())
    await answered_and_resolved(runtime, clock)
    [proposal] = await review_of(runtime, clock).proposals()
    env = operator_env(sqlite_url)

    table = await asyncio.to_thread(kb, ["proposals"], env)
    assert table.returncode == 0, table.stderr
    assert "proposed" in table.stdout and "HIPAA business associate" in table.stdout and "U0ALICE" in table.stdout
    edited = await asyncio.to_thread(kb, ["approve", str(proposal.id), "--text", "Yes, ask your account manager.",
                                          "--reviewer", "rita"], env)
    assert edited.returncode == 0 and f"approved proposal {proposal.id} (edited)" in edited.stdout
    [shown] = [json.loads(line) for line in (await asyncio.to_thread(
        kb, ["proposals", "--status", "approved", "--format", "json"], env)).stdout.splitlines()]
    assert (shown["status"], shown["reviewer"], shown["answer"]) == ("approved", "rita", ANSWER)
    assert shown["indexed_answer"] == shown["edited_answer"] == "Yes, ask your account manager."

    rejected = await asyncio.to_thread(kb, ["reject", str(proposal.id)], env)
    assert rejected.returncode == 0 and "rejected proposal" in rejected.stdout
    assert [s.documents for s in await KnowledgeBase(runtime.db, runtime.config).sources()] == [0]
    for args, error in ((["approve", "abc"], "'abc' is not a proposal id"),
                        (["reject", "77"], "there is no proposed answer #77"),
                        (["approve", str(proposal.id), "--text", " "], "the edited answer is empty")):
        refused = await asyncio.to_thread(kb, args, env)
        assert refused.returncode == 2 and error in refused.stderr and "Traceback" not in refused.stderr
