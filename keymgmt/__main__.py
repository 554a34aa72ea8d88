"""`python -m keymgmt` serves the admin API; `python -m keymgmt migrate` only migrates."""

from __future__ import annotations

import asyncio
import logging
import sys

from aiohttp import web

from keymgmt.app import create_app
from shared.config import ConfigError, Settings
from shared.db import create_engine, migrate, wait_for_database
from shared.logs import setup_logging
from shared.runtime import install_uvloop

log = logging.getLogger("gateway.keymgmt")


async def _migrate_only(settings: Settings) -> None:
    engine = create_engine(settings.postgres, pool_size=1)
    try:
        await wait_for_database(engine)
        await migrate(engine)
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        sys.exit(f"keymgmt: configuration error: {error}")
    if args not in ([], ["migrate"]):
        sys.exit("usage: python -m keymgmt [migrate]")
    setup_logging(settings.log_format, settings.log_level)
    install_uvloop()
    if args == ["migrate"]:
        asyncio.run(_migrate_only(settings))
        log.info("schema is up to date")
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
