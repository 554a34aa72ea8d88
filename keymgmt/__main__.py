"""`python -m keymgmt` serves the admin API.

`python -m keymgmt migrate` only migrates; `python -m keymgmt rebuild-spend` sets every key's
spend in Redis to its total in Postgres, and its current windows from the events of the last one.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from aiohttp import web

from keymgmt.app import create_app
from keymgmt.slot_batches import connect
from keymgmt.spend import rebuild_all_spend
from shared.config import ConfigError, Settings
from shared.db_engine import create_engine, migrate, wait_for_database
from shared.logs import setup_logging
from shared.pg import describe
from shared.runtime import install_uvloop

log = logging.getLogger("gateway.keymgmt")


async def _migrate_only(settings: Settings) -> None:
    engine = create_engine(settings.postgres, pool_size=1)
    try:
        await wait_for_database(engine)
        await migrate(engine)
    finally:
        await engine.dispose()


async def _rebuild_spend(settings: Settings) -> None:
    engine = create_engine(settings.postgres, pool_size=1)
    client = connect(settings.redis, max_connections=2)
    try:
        await wait_for_database(engine)
        await migrate(engine)
        rebuilt = await rebuild_all_spend(engine, client)
        log.info("spend rebuilt from the per-key totals", extra={"keys": rebuilt})
    finally:
        await client.aclose()
        await engine.dispose()


COMMANDS = {"migrate": _migrate_only, "rebuild-spend": _rebuild_spend}


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        sys.exit(f"keymgmt: configuration error: {error}")
    if len(args) > 1 or (args and args[0] not in COMMANDS):
        sys.exit(f"usage: python -m keymgmt [{' | '.join(COMMANDS)}]")
    setup_logging(settings.log_format, settings.log_level)
    install_uvloop()
    if args:
        command, target = args[0], settings.postgres.target()
        print(f"keymgmt {command}: {target}", file=sys.stderr, flush=True)
        try:
            asyncio.run(COMMANDS[command](settings))
        except Exception as error:
            sys.exit(f"keymgmt {command}: failed on {target}: {describe(error)}")
        return
    log.info(
        "keymgmt listening", extra={"host": settings.keymgmt_host, "port": settings.keymgmt_port}
    )
    web.run_app(
        create_app(settings),
        host=settings.keymgmt_host,
        port=settings.keymgmt_port,
        print=None,
        access_log=None,
    )


if __name__ == "__main__":
    main()
