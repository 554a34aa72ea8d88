"""Events by what a PII policy did, over time: the `actions` filter of POST /api/v2/events.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Partial, as the custom id's and the user's: the events of keys without a policy have none.
    op.create_index(
        "usage_events_policy_action_time",
        "usage_events",
        ["policy_action", "created_at"],
        postgresql_where=sa.text("policy_action IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("usage_events_policy_action_time", "usage_events")
