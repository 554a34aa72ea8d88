"""Usage events say which route step and attempt they were, and a route cache hit what it saved.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

COLUMNS = (
    ("route_id", sa.Text, ""),  # "": not a route's call
    ("route_step", sa.Integer, "0"),
    ("route_attempt", sa.Integer, "0"),  # 0: a cache hit, no upstream asked
    ("cache_hit", sa.Boolean, "false"),
    ("saved_cost_nano", sa.BigInteger, "0"),
)


def upgrade() -> None:
    # Constant defaults: Postgres adds such columns without rewriting the table.
    for name, kind, default in COLUMNS:
        op.add_column("usage_events", sa.Column(name, kind, nullable=False, server_default=default))


def downgrade() -> None:
    for name, _, _ in reversed(COLUMNS):
        op.drop_column("usage_events", name)
