"""Access control and extra rate windows on keys, end users, and what events record of a call.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _access_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("allowed_paths", JSONB, nullable=False, server_default="[]"),
        sa.Column("allowed_models", ARRAY(sa.Text), nullable=False, server_default="{}"),
    ]


def upgrade() -> None:
    for column in (
        *_access_columns(),
        sa.Column("rate_limits", JSONB, nullable=False, server_default="[]"),
        sa.Column("should_log_request", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("should_log_response", sa.Boolean, nullable=False, server_default=sa.false()),
    ):
        op.add_column("keys", column)
    op.create_table(
        "users",
        sa.Column("id", UUID(as_uuid=False), primary_key=True),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False, server_default=""),
        sa.Column("tags", ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("key_ids", ARRAY(UUID(as_uuid=False)), nullable=False, server_default="{}"),
        sa.Column("revoked", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("revoked_reason", sa.Text, nullable=False, server_default=""),
        sa.Column("cost_limit_in_usd", sa.Double, nullable=False, server_default="0"),
        sa.Column("cost_limit_in_usd_over_time", sa.Double, nullable=False, server_default="0"),
        sa.Column("cost_limit_in_usd_unit", sa.String(1), nullable=False, server_default=""),
        sa.Column("rate_limit_over_time", sa.Integer, nullable=False, server_default="0"),
        sa.Column("rate_limit_unit", sa.String(1), nullable=False, server_default=""),
        sa.Column("ttl", sa.Text, nullable=False, server_default=""),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        *_access_columns(),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True)),
    )
    op.create_index("users_user_id", "users", ["user_id"])
    op.create_index("users_updated_at", "users", ["updated_at"])
    op.create_index("users_tags", "users", ["tags"], postgresql_using="gin")
    op.create_index("users_key_ids", "users", ["key_ids"], postgresql_using="gin")
    for column in (
        sa.Column("custom_id", sa.Text),
        sa.Column("user_id", sa.Text),
        sa.Column("metadata", JSONB),
        sa.Column("request_content", sa.Text),
        sa.Column("request_truncated", sa.Boolean),
        sa.Column("response_content", sa.Text),
        sa.Column("response_truncated", sa.Boolean),
    ):
        op.add_column("usage_events", column)
    # Partial: most events carry neither, and an index of nulls would only cost inserts.
    # Events of a custom id or a user, over time; and each key's ids for the id listings.
    for name in ("custom_id", "user_id"):
        where = sa.text(f"{name} IS NOT NULL")
        op.create_index(
            f"usage_events_{name}_time", "usage_events", [name, "created_at"],
            postgresql_where=where,
        )  # fmt: skip
        op.create_index(
            f"usage_events_key_{name}", "usage_events", ["key_id", name], postgresql_where=where
        )
    op.create_index("usage_events_status_time", "usage_events", ["status", "created_at"])


def downgrade() -> None:
    for index in ("custom_id_time", "user_id_time", "key_custom_id", "key_user_id", "status_time"):
        op.drop_index(f"usage_events_{index}", "usage_events")
    for column in ("custom_id", "user_id", "metadata", "request_content", "request_truncated",
                   "response_content", "response_truncated"):  # fmt: skip
        op.drop_column("usage_events", column)
    op.drop_table("users")
    for column in ("allowed_paths", "allowed_models", "rate_limits", "should_log_request",
                   "should_log_response"):  # fmt: skip
        op.drop_column("keys", column)
