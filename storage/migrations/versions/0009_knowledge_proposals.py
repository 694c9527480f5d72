"""knowledge_proposals: answers people gave in resolved escalations, proposed as knowledge for review

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 03:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "knowledge_proposals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("escalation_id", sa.Integer(), nullable=False),
        sa.Column("route", sa.String(length=64), nullable=True),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("answered_by", sa.String(length=64), nullable=True),
        sa.Column("permalink", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reviewer", sa.String(length=64), nullable=True),
        sa.Column("edited_answer", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('proposed', 'approved', 'rejected')", name="ck_knowledge_proposals_status"),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["escalation_id"], ["escalations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("escalation_id"),
    )
    op.create_index("ix_knowledge_proposals_conversation_id", "knowledge_proposals", ["conversation_id"])
    op.create_index("ix_knowledge_proposals_status", "knowledge_proposals", ["status"])


def downgrade() -> None:
    op.drop_index("ix_knowledge_proposals_status", table_name="knowledge_proposals")
    op.drop_index("ix_knowledge_proposals_conversation_id", table_name="knowledge_proposals")
    op.drop_table("knowledge_proposals")
