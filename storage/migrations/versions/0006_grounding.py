"""route_decisions.grounding and .sources: the passages each answer was grounded in; escalations for missing docs

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 01:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TRIGGERS = "'route', 'rule', 'vote', 'llm_failure', 'user_request', 'failure'"


def upgrade() -> None:
    with op.batch_alter_table("route_decisions") as batch:
        batch.add_column(sa.Column("grounding", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("sources", sa.JSON(), nullable=False, server_default="[]"))
        batch.create_check_constraint("ck_route_decisions_grounding", "grounding IN ('documents', 'missing')")
    with op.batch_alter_table("escalations") as batch:
        batch.drop_constraint("ck_escalations_trigger", type_="check")
        batch.create_check_constraint("ck_escalations_trigger", f"trigger IN ({_TRIGGERS}, 'no_docs')")


def downgrade() -> None:
    with op.batch_alter_table("escalations") as batch:
        batch.drop_constraint("ck_escalations_trigger", type_="check")
        batch.create_check_constraint("ck_escalations_trigger", f"trigger IN ({_TRIGGERS})")
    with op.batch_alter_table("route_decisions") as batch:
        batch.drop_constraint("ck_route_decisions_grounding", type_="check")
        batch.drop_column("sources")
        batch.drop_column("grounding")
