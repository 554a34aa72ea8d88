"""Process-level set-up shared by both services."""

import asyncio


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # not on every platform; the default loop works, only slower
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
