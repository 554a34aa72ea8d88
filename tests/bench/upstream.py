"""The project's fake OpenAI upstream, served for the benchmark.

Like `python -m proxy.fakeupstream`, but with uvloop and without recording requests: the CLI
keeps a copy of every request, which would cost the upstream CPU and memory on every leg.
"""

from __future__ import annotations

import argparse

from aiohttp import web

from proxy.fakeupstream import FakeOptions, create_fake_upstream
from shared.runtime import install_uvloop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    install_uvloop()
    app = create_fake_upstream(FakeOptions(record=False))
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
