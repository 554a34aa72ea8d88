"""Policies (PII detection and masking), the key's policy, and what screening did on each event.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "policies",
        sa.Column("policy_id", UUID(as_uuid=False), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("tags", ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("rules", JSONB, nullable=False, server_default="{}"),
        sa.Column("regex_rules", JSONB, nullable=False, server_default="[]"),
        sa.Column("restore", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True)),
    )
    op.create_index("policies_updated_at", "policies", ["updated_at"])
    op.create_index("policies_tags", "policies", ["tags"], postgresql_using="gin")
    # Nullable, without a default: adding it rewrites no row of a large keys table.
    op.add_column("keys", sa.Column("policy_id", UUID(as_uuid=False)))
    op.create_index(
        "keys_live_policy_id",
        "keys",
        ["policy_id"],
        postgresql_where=sa.text("deleted_at IS NULL AND policy_id IS NOT NULL"),
    )
    op.add_column("usage_events", sa.Column("policy_id", UUID(as_uuid=False)))
    op.add_column("usage_events", sa.Column("policy_action", sa.Text))
    op.add_column("usage_events", sa.Column("policy_counts", JSONB))


def downgrade() -> None:
    op.drop_column("usage_events", "policy_counts")
    op.drop_column("usage_events", "policy_action")
    op.drop_column("usage_events", "policy_id")
    op.drop_index("keys_live_policy_id", "keys")
    op.drop_column("keys", "policy_id")
    op.drop_table("policies")
