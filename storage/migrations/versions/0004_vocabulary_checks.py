"""CHECK constraints: every state, tier, outcome, role and purpose column holds only the bot's vocabulary

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 23:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Mirrors bot.vocabulary as of this revision (a migration never imports the live code); later changes to the
# vocabulary come with a migration of their own.
_STATES = "('paged', 'acknowledged', 'resolved', 'expired')"
_OUTCOMES = "('replied', 'escalated', 'quiet', 'ignored', 'failed')"
_VERDICTS = "('reply', 'needs_human', 'error')"
CHECKS: dict[str, list[tuple[str, str]]] = {
    "conversations": [
        ("ck_conversations_state", "state IN ('open', 'escalated', 'taken_over', 'resolved')"),
        ("ck_conversations_source", "source IN ('slack', 'local', 'cli', 'triage')"),
    ],
    "messages": [("ck_messages_role", "role IN ('user', 'assistant', 'staff')")],
    "inbound_events": [
        ("ck_inbound_events_status", "status IN ('pending', 'processing', 'done', 'failed')"),
        ("ck_inbound_events_outcome", f"outcome IN {_OUTCOMES}"),
    ],
    "route_decisions": [
        ("ck_route_decisions_decided_by", "decided_by IN ('rules', 'local', 'llm', 'hybrid')"),
        ("ck_route_decisions_outcome", f"outcome IN {_OUTCOMES}"),
    ],
    "votes": [
        ("ck_votes_majority", f"majority IN {_VERDICTS}"),
        ("ck_votes_strategy", "strategy IN ('majority', 'judge')"),
    ],
    "vote_samples": [("ck_vote_samples_verdict", f"verdict IN {_VERDICTS}")],
    "escalations": [
        ("ck_escalations_state", f"state IN {_STATES}"),
        ("ck_escalations_trigger",
         "trigger IN ('route', 'rule', 'vote', 'llm_failure', 'user_request', 'failure')"),
    ],
    "escalation_events": [
        ("ck_escalation_events_from_state", f"from_state IN {_STATES}"),
        ("ck_escalation_events_to_state", f"to_state IN {_STATES}"),
    ],
    "llm_calls": [("ck_llm_calls_purpose", "purpose IN ('route', 'reply', 'vote', 'judge', 'triage')")],
}


def upgrade() -> None:
    # SQLite cannot add a constraint to a table: batch mode rebuilds the table with it (PostgreSQL alters it).
    for table, checks in CHECKS.items():
        with op.batch_alter_table(table) as batch:
            for name, condition in checks:
                batch.create_check_constraint(name, condition)


def downgrade() -> None:
    for table, checks in CHECKS.items():
        with op.batch_alter_table(table) as batch:
            for name, _ in checks:
                batch.drop_constraint(name, type_="check")
