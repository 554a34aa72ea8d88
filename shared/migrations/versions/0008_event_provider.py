"""Usage events name the provider and the setting a call went through, and its cache writes.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Constant defaults: Postgres adds such columns without rewriting the table.
    op.add_column(
        "usage_events", sa.Column("provider", sa.Text, nullable=False, server_default="openai")
    )
    op.add_column(
        "usage_events", sa.Column("setting_id", sa.Text, nullable=False, server_default="")
    )
    op.add_column(
        "usage_events",
        sa.Column("cache_creation_tokens", sa.Integer, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_column("usage_events", "cache_creation_tokens")
    op.drop_column("usage_events", "setting_id")
    op.drop_column("usage_events", "provider")
