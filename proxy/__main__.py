"""`python -m proxy` serves the OpenAI-compatible proxy, in PROXY_WORKERS processes."""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import signal
import sys
from types import FrameType

from aiohttp import web

from proxy.app import create_app
from shared.config import ConfigError, Settings
from shared.logs import setup_logging
from shared.runtime import install_uvloop, spare_the_collector

log = logging.getLogger("gateway.proxy")
# A client that leaves cancels its handler (aiohttp's test servers do the same).
HANDLER_CANCELLATION = True


def serve(settings: Settings, app: web.Application | None = None) -> None:
    """One worker. On SIGTERM it stops accepting, lets calls and streams finish within
    PROXY_TIMEOUT, drains its queued spend to Redis, and exits."""
    install_uvloop()
    spare_the_collector()
    web.run_app(
        app or create_app(settings),
        host=settings.proxy_host,
        port=settings.proxy_port,
        reuse_port=settings.proxy_workers > 1,
        print=None,
        access_log=None,
        handler_cancellation=HANDLER_CANCELLATION,
        shutdown_timeout=settings.proxy_timeout,
    )


def supervise(settings: Settings) -> int:
    """Run the workers side by side on one port (SO_REUSEPORT); stop them all together."""
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=serve, args=(settings,), name=f"proxy-worker-{n}")
        for n in range(settings.proxy_workers)
    ]
    for worker in workers:
        worker.start()

    def forward(signum: int, _: FrameType | None) -> None:
        for worker in workers:
            if worker.is_alive() and worker.pid is not None:
                worker.terminate()

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    sentinels = {worker.sentinel: worker for worker in workers}
    failed = False
    while sentinels:
        for ready in multiprocessing.connection.wait(list(sentinels)):
            worker = sentinels.pop(ready)  # type: ignore[arg-type]
            worker.join()
            if worker.exitcode not in (0, -signal.SIGTERM) and not failed:
                log.error("%s exited with %s: stopping the others", worker.name, worker.exitcode)
                failed = True
                forward(signal.SIGTERM, None)
    return 1 if failed else 0


def main() -> None:
    try:
        settings = Settings.from_env()
        settings.require_upstream_key()
        setup_logging(settings.log_format, settings.log_level)
        app = create_app(settings)  # also checks what only the app reads, such as PRICING_FILE
    except ConfigError as error:
        sys.exit(f"proxy: configuration error: {error}")
    log.info(
        "proxy listening",
        extra={
            "host": settings.proxy_host,
            "port": settings.proxy_port,
            "workers": settings.proxy_workers,
        },
    )
    if settings.proxy_workers == 1:
        serve(settings, app)
    else:
        sys.exit(supervise(settings))


if __name__ == "__main__":
    main()
