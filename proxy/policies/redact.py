"""Typed, numbered placeholders: [EMAIL_1], [EMAIL_2], ... the same value the same placeholder."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from proxy.policies.detect import Hit
from shared.models import ENTITIES, SECRETS


def placeholder_name(entity: str) -> str:
    return entity.upper()


# The longest a placeholder can be: what a streamed answer may have to hold back, at most.
PLACEHOLDER_MAX = max(len(placeholder_name(e)) for e in (*ENTITIES, "custom")) + len("[_999999]")


class Placeholders:
    def __init__(self) -> None:
        self._issued: dict[tuple[str, str], str] = {}
        self._numbers = Counter[str]()
        self.restorable: dict[str, str] = {}  # placeholder -> value, secrets excepted

    def __call__(self, entity: str, value: str) -> str:
        found = self._issued.get((entity, value))
        if found is None:
            self._numbers[entity] += 1
            found = f"[{placeholder_name(entity)}_{self._numbers[entity]}]"
            self._issued[entity, value] = found
            if entity not in SECRETS:
                self.restorable[found] = value
        return found


def rewrite(text: bytes, hits: Iterable[tuple[Hit, int]], placeholders: Placeholders) -> str:
    """`text` with each hit (at its offset within `text`) replaced by its placeholder."""
    pieces = []
    position = 0
    for hit, offset in hits:
        start, end = hit.start - offset, hit.end - offset
        pieces.append(text[position:start].decode())
        pieces.append(placeholders(hit.entity, text[start:end].decode()))
        position = end
    pieces.append(text[position:].decode())
    return "".join(pieces)
