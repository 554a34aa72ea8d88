"""Statements of a migration that may take long on a big table."""

from typing import Any

from alembic import op
from sqlalchemy.util import await_

LONG_STATEMENT_SECONDS = 3600.0


def run_long(statement: str) -> None:
    """Without keymgmt's statement timeout: on the migration's own connection and transaction,
    past the asyncpg driver's wrapper."""
    driver: Any = op.get_bind().connection.driver_connection
    await_(driver.execute(statement, timeout=LONG_STATEMENT_SECONDS))
