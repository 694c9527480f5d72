"""feedback on answers, route_decisions.reply_ts, conversations.resolution; escalations for feedback

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 03:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TRIGGERS = "'route', 'rule', 'vote', 'llm_failure', 'user_request', 'failure', 'no_docs'"
_RESOLUTIONS = "'resolved_by_bot', 'escalated', 'resolved_by_human', 'abandoned'"
_BASES = ("'feedback', 'thanks', 'no_follow_up', 'escalation_opened', 'escalation_resolved', "
          "'escalation_expired', 'staff_answer'")


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("decision_id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("user", sa.String(length=64), nullable=False),
        sa.Column("from_asker", sa.Boolean(), nullable=False),
        sa.Column("value", sa.String(length=8), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("value IN ('good', 'bad')", name="ck_feedback_value"),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["decision_id"], ["route_decisions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("decision_id", "user", name="uq_feedback_decision_user"),
    )
    op.create_index("ix_feedback_conversation_id", "feedback", ["conversation_id"])
    with op.batch_alter_table("route_decisions") as batch:
        batch.add_column(sa.Column("reply_ts", sa.String(length=32), nullable=True))
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("resolution", sa.String(length=24), nullable=True))
        batch.add_column(sa.Column("resolution_basis", sa.String(length=24), nullable=True))
        batch.add_column(sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_check_constraint("ck_conversations_resolution", f"resolution IN ({_RESOLUTIONS})")
        batch.create_check_constraint("ck_conversations_resolution_basis", f"resolution_basis IN ({_BASES})")
    with op.batch_alter_table("escalations") as batch:
        batch.drop_constraint("ck_escalations_trigger", type_="check")
        batch.create_check_constraint("ck_escalations_trigger", f"trigger IN ({_TRIGGERS}, 'feedback')")


def downgrade() -> None:
    with op.batch_alter_table("escalations") as batch:
        batch.drop_constraint("ck_escalations_trigger", type_="check")
        batch.create_check_constraint("ck_escalations_trigger", f"trigger IN ({_TRIGGERS})")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_constraint("ck_conversations_resolution_basis", type_="check")
        batch.drop_constraint("ck_conversations_resolution", type_="check")
        batch.drop_column("resolved_at")
        batch.drop_column("resolution_basis")
        batch.drop_column("resolution")
    with op.batch_alter_table("route_decisions") as batch:
        batch.drop_column("reply_ts")
    op.drop_index("ix_feedback_conversation_id", table_name="feedback")
    op.drop_table("feedback")
