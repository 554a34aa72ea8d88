"""Process-level set-up shared by both services."""

import asyncio
import contextlib


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # not on every platform; the default loop works, only slower
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def raise_if_cancelled() -> None:
    """Re-raise a cancellation that a library turned into another error (redis-py can)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def stop_task(task: asyncio.Task[None]) -> None:
    """Cancel a background task and wait until it has ended."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
