"""Per-key spend totals kept by a trigger, rejected events, and an index by recording time.

The totals are filled from the events already recorded, with inserts held off meanwhile; that and
the index build scan the whole table, so they run without keymgmt's statement timeout.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

from shared.migrations.long import run_long as _long

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ADD_TO_KEY_SPEND = """
CREATE FUNCTION add_to_key_spend() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  -- Rows locked in key order, so that concurrent inserts never deadlock.
  INSERT INTO key_spend (key_id, cost_nano, events)
  SELECT key_id, sum(cost_nano), count(*) FROM inserted
  WHERE key_id IS NOT NULL AND cost_nano IS NOT NULL
  GROUP BY key_id ORDER BY key_id
  ON CONFLICT (key_id) DO UPDATE
  SET cost_nano = key_spend.cost_nano + excluded.cost_nano,
      events = key_spend.events + excluded.events;
  RETURN NULL;
END $$
"""


def _trigger(table: str) -> str:
    # A statement trigger sees only the rows the statement inserted, not those ON CONFLICT skipped.
    return (
        f"CREATE TRIGGER {table}_key_spend AFTER INSERT ON {table} "
        "REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION add_to_key_spend()"
    )


def upgrade() -> None:
    op.create_table(
        "key_spend",
        sa.Column("key_id", UUID(as_uuid=False), primary_key=True),
        sa.Column("cost_nano", sa.BigInteger, nullable=False),
        sa.Column("events", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "usage_events_rejected",
        sa.Column("entry_id", sa.Text, primary_key=True),
        sa.Column("key_id", UUID(as_uuid=False)),
        sa.Column("cost_nano", sa.BigInteger),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event", sa.Text, nullable=False),
        sa.Column("error", sa.Text, nullable=False),
    )
    op.execute(ADD_TO_KEY_SPEND)
    # Writers of an older version may still be inserting: hold them off until the totals and the
    # trigger are in place together, so no event is counted twice or missed.
    _long("LOCK TABLE usage_events IN SHARE ROW EXCLUSIVE MODE")
    _long(
        "INSERT INTO key_spend (key_id, cost_nano, events) "
        "SELECT key_id, sum(cost_nano), count(*) FROM usage_events GROUP BY key_id"
    )
    op.execute(_trigger("usage_events"))
    op.execute(_trigger("usage_events_rejected"))
    _long("CREATE INDEX usage_events_recorded_at ON usage_events (recorded_at)")


def downgrade() -> None:
    op.drop_index("usage_events_recorded_at", "usage_events")
    op.execute("DROP TRIGGER usage_events_key_spend ON usage_events")
    op.drop_table("usage_events_rejected")
    op.execute("DROP FUNCTION add_to_key_spend()")
    op.drop_table("key_spend")
