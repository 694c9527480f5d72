"""sla_clocks: first response, first human response and resolution times of each thread, with their targets

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 03:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sla_clocks",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("conversation_id", sa.Integer(), sa.ForeignKey("conversations.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("escalation_id", sa.Integer(), sa.ForeignKey("escalations.id", ondelete="CASCADE"), nullable=True),
        sa.Column("metric", sa.String(length=32), nullable=False),
        sa.Column("route", sa.String(length=64), nullable=True),
        sa.Column("target_s", sa.Float(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("warn_due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("warned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("breached_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("met_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("elapsed_s", sa.Float(), nullable=True),
        sa.UniqueConstraint("key"),
        sa.CheckConstraint("metric IN ('first_response', 'first_human_response', 'resolution')",
                           name="ck_sla_clocks_metric"),
    )
    op.create_index("ix_sla_clocks_deadline", "sla_clocks", ["deadline"])
    op.create_index("ix_sla_clocks_conversation_id", "sla_clocks", ["conversation_id"])
    op.create_index("ix_sla_clocks_escalation_id", "sla_clocks", ["escalation_id"])


def downgrade() -> None:
    op.drop_table("sla_clocks")
