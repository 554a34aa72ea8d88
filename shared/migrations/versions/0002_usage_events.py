"""Usage events: one row per proxied call, idempotent by event id.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_events",
        sa.Column("event_id", UUID(as_uuid=False), primary_key=True),
        sa.Column("request_id", sa.Text, nullable=False),
        sa.Column("key_id", UUID(as_uuid=False), nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("cached_tokens", sa.Integer, nullable=False),
        sa.Column("cost_nano", sa.BigInteger, nullable=False),
        sa.Column("latency_ms", sa.Double, nullable=False),
        sa.Column("upstream_ms", sa.Double, nullable=False),
        sa.Column("streamed", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        # When the event (and its charge, in the same script call) reached Redis, by Redis's clock.
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("usage_events_key_time", "usage_events", ["key_id", "created_at"])
    op.create_index("usage_events_time", "usage_events", ["created_at"])


def downgrade() -> None:
    op.drop_table("usage_events")
