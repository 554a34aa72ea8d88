"""Stage 1b, screen: before admission, the key's policy scans what the request carries to a model.

`block` refuses the call (nothing forwarded, nothing billed); `allow_but_redact` replaces each
value with its placeholder and re-serialises the body; `allow_but_warn` lets it through and
says so on the answer. Fail closed: a body that cannot be read, a policy the proxy does not
hold, or any failure while scanning refuses the call. A key without a policy skips all of it.
The values found stay in this request's memory: no log line, metric or event holds one.
"""

from __future__ import annotations

import bisect
import logging
from collections import Counter

import orjson

from proxy.calls import Call
from proxy.errors import ProxyError
from proxy.policies.compiled import CompiledPolicy
from proxy.policies.detect import SEPARATOR, Hit
from proxy.policies.fields import Slot, text_slots
from proxy.policies.outcome import Screening
from proxy.policies.redact import Placeholders, rewrite
from proxy.policies.snapshot import PolicySnapshot
from shared.jsonutil import loads_object
from shared.models import ACTIONS, ALLOW, BLOCK, REDACT, WARN

log = logging.getLogger("gateway.policies")


def policy_violation(entities: list[str]) -> ProxyError:
    return ProxyError(
        403,
        f"this key's policy blocks requests carrying: {', '.join(entities)}",
        "invalid_request_error",
        "policy_violation",
    )


def unscannable_body() -> ProxyError:
    return ProxyError(
        400,
        "this key's policy screens every request, and this body is not JSON it can scan",
        "invalid_request_error",
        "unscannable_body",
    )


def policy_unavailable() -> ProxyError:
    return ProxyError(
        503, "this key's policy is not loaded yet; try again shortly", "server_error",
        "policy_unavailable",
    )  # fmt: skip


def scan_failed() -> ProxyError:
    return ProxyError(
        500, "the request could not be screened by this key's policy", "server_error",
        "policy_scan_failed",
    )  # fmt: skip


def screen(call: Call, policies: PolicySnapshot) -> None:
    policy_id = call.key.policy_id
    if not policy_id:
        return
    compiled = policies.get(policy_id)
    if compiled is None:
        raise policy_unavailable()
    try:
        blocked = _screen(call, compiled)
    except ProxyError:
        raise
    except Exception as error:  # the type only: a message could quote the text
        log.error("screening failed: %s", type(error).__name__)
        raise scan_failed() from None
    if blocked:
        call.status = 403
        raise policy_violation(blocked)


def _screen(call: Call, compiled: CompiledPolicy) -> list[str]:
    """Screens the call's body (rewriting it when it redacts); the entities it blocks for."""
    call.screening = screening = Screening(compiled.policy.policy_id, ALLOW)
    if not call.body:
        return []
    document = loads_object(call.body)
    if document is None:
        raise unscannable_body()
    slots = text_slots(document)
    if not slots:
        return []
    texts = [container[key].encode() for container, key in slots]
    hits = compiled.scanner.scan(SEPARATOR.join(texts))
    if not hits:
        return []
    actions = [compiled.action_of(hit) for hit in hits]
    screening.counts = dict(Counter(hit.entity for hit in hits))
    screening.action = min(actions, key=ACTIONS.index)  # the strongest
    if call.key.should_log_request and any(action != REDACT for action in actions):
        screening.logged_request = _masked(call.body, hits)
    if screening.action == BLOCK:
        return sorted(
            {hit.entity for hit, action in zip(hits, actions, strict=True) if action == BLOCK}
        )
    screening.warned = tuple(
        sorted({hit.entity for hit, action in zip(hits, actions, strict=True) if action == WARN})
    )
    redacted = [hit for hit, action in zip(hits, actions, strict=True) if action == REDACT]
    if redacted:
        placeholders = Placeholders()
        _redact(slots, texts, redacted, placeholders)
        call.body = orjson.dumps(document)
        if compiled.policy.restore:
            screening.restore = placeholders.restorable
    return []


def _masked(body: bytes, hits: list[Hit]) -> bytes:
    """The body with every hit replaced by its placeholder, whatever its action: what request
    logging stores of a call whose body went on (or was refused) with values in it."""
    document = loads_object(body) or {}  # it was read once already: it is an object
    slots = text_slots(document)
    _redact(slots, [container[key].encode() for container, key in slots], hits, Placeholders())
    return orjson.dumps(document)


def _redact(
    slots: list[Slot], texts: list[bytes], hits: list[Hit], placeholders: Placeholders
) -> None:
    """Each hit replaced in the text it was found in, by offsets within the joined texts."""
    starts = []
    offset = 0
    for text in texts:
        starts.append(offset)
        offset += len(text) + len(SEPARATOR)
    by_slot: dict[int, list[tuple[Hit, int]]] = {}
    for hit in hits:
        index = bisect.bisect_right(starts, hit.start) - 1
        start, end = starts[index], starts[index] + len(texts[index])
        # A custom pattern may run past its text into the next: cut it at its text's end.
        clipped = Hit(hit.entity, max(hit.start, start), min(hit.end, end), hit.rule)
        if clipped.end > clipped.start:
            by_slot.setdefault(index, []).append((clipped, start))
    for index, found in by_slot.items():
        container, key = slots[index]
        container[key] = rewrite(texts[index], found, placeholders)
