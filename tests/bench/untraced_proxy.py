"""The proxy with its telemetry switched off: no log line, no metrics and no usage event per call.

Only the benchmark runs it, as the baseline for what logs, metrics and events cost together;
admission, metering and settlement run as in the real proxy. One worker only: forked workers
would inherit the switch, but the supervisor is not what is measured here.
"""

from __future__ import annotations

import proxy.forward
from proxy.__main__ import main


def _nothing(*_: object) -> None:
    return None


if __name__ == "__main__":
    # `finish` calls these by the names it imported; an event of None is not appended.
    vars(proxy.forward).update(record_call=_nothing, usage_event=_nothing)
    main()
