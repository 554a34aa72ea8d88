"""Provider settings (with tombstones, like keys), and the settings a key may use.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from shared.migrations.long import run_long

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "provider_settings",
        sa.Column("setting_id", UUID(as_uuid=False), primary_key=True),
        sa.Column("provider", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("options", JSONB, nullable=False, server_default="{}"),
        sa.Column("secret", sa.LargeBinary),
        sa.Column("secret_hint", sa.Text, nullable=False, server_default=""),
        sa.Column("allowed_models", ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("cost_map", JSONB, nullable=False, server_default="{}"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True)),
    )
    op.create_index(
        "provider_settings_live_name",
        "provider_settings",
        ["name"],
        unique=True,
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_index("provider_settings_updated_at", "provider_settings", ["updated_at"])
    # Constant defaults: Postgres adds these without rewriting the table.
    op.add_column(
        "keys",
        sa.Column("setting_ids", ARRAY(UUID(as_uuid=False)), nullable=False, server_default="{}"),
    )
    op.add_column(
        "keys",
        sa.Column("rotation_enabled", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    run_long("CREATE INDEX keys_setting_ids ON keys USING gin (setting_ids)")


def downgrade() -> None:
    op.drop_index("keys_setting_ids", "keys")
    op.drop_column("keys", "rotation_enabled")
    op.drop_column("keys", "setting_ids")
    op.drop_table("provider_settings")
