"""`python -m proxy` serves the OpenAI-compatible proxy."""

from __future__ import annotations

import logging
import sys

from aiohttp import web

from proxy.app import create_app
from shared.config import ConfigError, Settings
from shared.logs import setup_logging
from shared.runtime import install_uvloop

log = logging.getLogger("gateway.proxy")


def main() -> None:
    try:
        settings = Settings.from_env()
        settings.require_upstream_key()
        setup_logging(settings.log_format, settings.log_level)
        app = create_app(settings)
    except ConfigError as error:
        sys.exit(f"proxy: configuration error: {error}")
    install_uvloop()
    log.info("proxy listening", extra={"host": settings.proxy_host, "port": settings.proxy_port})
    web.run_app(
        app,
        host=settings.proxy_host,
        port=settings.proxy_port,
        print=None,
        access_log=None,
        handler_cancellation=True,
    )


if __name__ == "__main__":
    main()
