"""Routes: ordered steps across providers, with retries, cool-down and a response cache.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "routes",
        sa.Column("route_id", UUID(as_uuid=False), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("key_ids", ARRAY(UUID(as_uuid=False)), nullable=False, server_default="{}"),
        sa.Column("steps", JSONB, nullable=False),
        sa.Column("retry_strategy", sa.Text, nullable=False),
        sa.Column("cache_config", JSONB, nullable=False),
        sa.Column("cool_down", JSONB, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True)),
    )
    op.create_index(
        "routes_live_path",
        "routes",
        ["path"],
        unique=True,
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_index("routes_updated_at", "routes", ["updated_at"])


def downgrade() -> None:
    op.drop_table("routes")
