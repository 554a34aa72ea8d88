"""Keys, with tombstones for deletions.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, UUID

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "keys",
        sa.Column("key_id", UUID(as_uuid=False), primary_key=True),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("tags", ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("revoked", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("revoked_reason", sa.Text, nullable=False, server_default=""),
        sa.Column("cost_limit_in_usd", sa.Double, nullable=False, server_default="0"),
        sa.Column("cost_limit_in_usd_over_time", sa.Double, nullable=False, server_default="0"),
        sa.Column("cost_limit_in_usd_unit", sa.String(1), nullable=False, server_default=""),
        sa.Column("rate_limit_over_time", sa.Integer, nullable=False, server_default="0"),
        sa.Column("rate_limit_unit", sa.String(1), nullable=False, server_default=""),
        sa.Column("ttl", sa.Text, nullable=False, server_default=""),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True)),
    )
    op.create_index(
        "keys_live_key_hash",
        "keys",
        ["key_hash"],
        unique=True,
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_index("keys_updated_at", "keys", ["updated_at"])
    op.create_index("keys_tags", "keys", ["tags"], postgresql_using="gin")


def downgrade() -> None:
    op.drop_table("keys")
