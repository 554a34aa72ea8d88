"""Stream entries as table rows: a usage event, or the record of one kept aside."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

from shared.limit_keys import EVENT_FIELD

EVENT_KEY = EVENT_FIELD.encode()
INT64 = range(-(2**63), 2**63)


def _text(value: Any, limit: int = 512) -> str:
    if not isinstance(value, str):
        raise ValueError("not text")
    return value.replace("\x00", "")[:limit]


def raw_event(fields: dict[bytes, bytes]) -> str:
    """An entry's event as text, however malformed, to keep it where it can be read."""
    raw = fields.get(EVENT_KEY)
    if raw is None:
        raw = orjson.dumps(
            {
                name.decode(errors="replace"): value.decode(errors="replace")
                for name, value in fields.items()
            }
        )
    return raw.decode(errors="replace").replace("\x00", "")


def redis_time(ms: int) -> datetime:
    """A time in ms by Redis's clock, as recorded_at holds it."""
    return datetime.fromtimestamp(ms / 1000, UTC)


def recorded_at(entry_id: bytes) -> datetime:
    """When the entry, and the charge of the same script call, reached Redis."""
    return redis_time(int(entry_id.split(b"-")[0]))


def rejection(
    name: str, entry: tuple[bytes, dict[bytes, bytes]], row: Any, error: str
) -> dict[str, Any]:
    """The usage_events_rejected row of an entry, with its charge when the event had a valid one.

    `name` is its id, with its stream where each stream numbers its own entries (in a cluster)."""
    entry_id, fields = entry
    cost = row["cost_nano"] if row is not None and row["cost_nano"] in INT64 else None
    return {
        "entry_id": name,
        "key_id": None if cost is None else row["key_id"],
        "cost_nano": cost,
        "recorded_at": recorded_at(entry_id),
        "event": raw_event(fields),
        "error": error[:1000],
    }


def _policy_fields(event: dict[str, Any]) -> dict[str, Any]:
    """What the key's policy did: its id, the action, and the hits by entity type."""
    if "policy_id" not in event:
        return {"policy_id": None, "policy_action": None, "policy_counts": None}
    counts = event["policy_counts"]
    if not isinstance(counts, dict):
        raise ValueError("not counts")
    return {
        "policy_id": str(uuid.UUID(event["policy_id"])),
        "policy_action": _text(event["policy_action"], 32),
        "policy_counts": {_text(name, 64): int(count) for name, count in counts.items()},
    }


def _optional_text(value: Any) -> str | None:
    return _text(value) if isinstance(value, str) and value else None


def optional_fields(event: dict[str, Any]) -> dict[str, Any]:
    """What only some events carry; every row has each column, so that one insert takes all."""
    metadata = event.get("metadata")
    fields: dict[str, Any] = {
        "custom_id": _optional_text(event.get("custom_id")),
        "user_id": _optional_text(event.get("user_id")),
        "metadata": metadata if isinstance(metadata, dict) else None,
    }
    for side in ("request", "response"):  # logged bodies, capped by the proxy
        content = event.get(f"{side}_content")
        if isinstance(content, str):
            fields[f"{side}_content"] = content.replace("\x00", "")
            fields[f"{side}_truncated"] = event.get(f"{side}_truncated") is True
        else:
            fields[f"{side}_content"] = fields[f"{side}_truncated"] = None
    return fields


def row_of(entry_id: bytes, fields: dict[bytes, bytes]) -> dict[str, Any] | None:
    """The table row of one stream entry, or None for an entry that is not an event."""
    try:
        if EVENT_KEY in fields:
            event = orjson.loads(fields[EVENT_KEY])
        else:  # a field per value, as proxies before the JSON field wrote them
            event = {name.decode(): value.decode() for name, value in fields.items()}
        return {
            "event_id": str(uuid.UUID(event["event_id"])),
            "request_id": _text(event["request_id"]),
            "key_id": str(uuid.UUID(event["key_id"])),
            "model": _text(event["model"]),
            "path": _text(event["path"]),
            "status": int(event["status"]),
            "prompt_tokens": int(event["prompt_tokens"]),
            "completion_tokens": int(event["completion_tokens"]),
            "cached_tokens": int(event["cached_tokens"]),
            "cost_nano": int(event["cost_nano"]),
            "latency_ms": float(event["latency_ms"]),
            "upstream_ms": float(event["upstream_ms"]),
            "streamed": event["streamed"] in (True, "1"),
            "created_at": datetime.fromtimestamp(float(event["time"]), UTC),
            "recorded_at": recorded_at(entry_id),
            # Proxies before there were other providers sent none of these.
            "provider": _text(event.get("provider", "openai")),
            "setting_id": _text(event.get("setting_id", "")),
            "cache_creation_tokens": int(event.get("cache_creation_tokens", 0)),
            **_policy_fields(event),
            **optional_fields(event),
            # Only a route's calls send these.
            "route_id": _text(event.get("route_id", "")),
            "route_step": int(event.get("route_step", 0)),
            "route_attempt": int(event.get("route_attempt", 0)),
            "cache_hit": event.get("cache_hit") is True,
            "saved_cost_nano": int(event.get("saved_cost_nano", 0)),
        }
    # JSONDecodeError and UnicodeDecodeError are ValueErrors.
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
