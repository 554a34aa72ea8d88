"""Database tables, and turning their rows into models."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from shared.models import Key, Policy, RegexRule, User, paths_of, windows_of

metadata = sa.MetaData()

keys = sa.Table(
    "keys",
    metadata,
    sa.Column("key_id", UUID(as_uuid=False), primary_key=True),
    sa.Column("key_hash", sa.String(64), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("tags", ARRAY(sa.Text), nullable=False, server_default="{}"),
    sa.Column("revoked", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("revoked_reason", sa.Text, nullable=False, server_default=""),
    sa.Column("cost_limit_in_usd", sa.Double, nullable=False, server_default="0"),
    sa.Column("cost_limit_in_usd_over_time", sa.Double, nullable=False, server_default="0"),
    sa.Column("cost_limit_in_usd_unit", sa.String(1), nullable=False, server_default=""),
    sa.Column("rate_limit_over_time", sa.Integer, nullable=False, server_default="0"),
    sa.Column("rate_limit_unit", sa.String(1), nullable=False, server_default=""),
    sa.Column("ttl", sa.Text, nullable=False, server_default=""),
    sa.Column("expires_at", sa.DateTime(timezone=True)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # A tombstone: deleted rows stay so that the proxy's incremental refresh sees the deletion.
    sa.Column("deleted_at", sa.DateTime(timezone=True)),
    # Provider settings the key may use (migration 0004), in the order given.
    sa.Column("setting_ids", ARRAY(UUID(as_uuid=False)), nullable=False, server_default="{}"),
    sa.Column("rotation_enabled", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("policy_id", UUID(as_uuid=False)),
    # [{"path", "method"}] and model names the key may call (empty: any), migration 0005.
    sa.Column("allowed_paths", JSONB, nullable=False, server_default="[]"),
    sa.Column("allowed_models", ARRAY(sa.Text), nullable=False, server_default="{}"),
    sa.Column("rate_limits", JSONB, nullable=False, server_default="[]"),  # [{"overTime", "unit"}]
    sa.Column("should_log_request", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("should_log_response", sa.Boolean, nullable=False, server_default=sa.false()),
)
sa.Index(
    "keys_live_policy_id",
    keys.c.policy_id,
    postgresql_where=sa.and_(keys.c.deleted_at.is_(None), keys.c.policy_id.isnot(None)),
)
sa.Index(
    "keys_live_key_hash",
    keys.c.key_hash,
    unique=True,
    postgresql_where=keys.c.deleted_at.is_(None),
)
sa.Index("keys_updated_at", keys.c.updated_at)
sa.Index("keys_tags", keys.c.tags, postgresql_using="gin")
sa.Index("keys_setting_ids", keys.c.setting_ids, postgresql_using="gin")

provider_settings = sa.Table(
    "provider_settings",
    metadata,
    sa.Column("setting_id", UUID(as_uuid=False), primary_key=True),
    sa.Column("provider", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    # The setting's fields but its secret, by API name: baseUrl, url, resourceName, ...
    sa.Column("options", JSONB, nullable=False, server_default="{}"),
    # The apikey sealed with shared.secrets (nonce + ciphertext and tag); null: none
    sa.Column("secret", sa.LargeBinary),
    sa.Column("secret_hint", sa.Text, nullable=False, server_default=""),  # what responses show
    sa.Column("allowed_models", ARRAY(sa.Text), nullable=False, server_default="{}"),
    sa.Column("cost_map", JSONB, nullable=False, server_default="{}"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("deleted_at", sa.DateTime(timezone=True)),  # a tombstone, as for keys
)
sa.Index(
    "provider_settings_live_name",
    provider_settings.c.name,
    unique=True,
    postgresql_where=provider_settings.c.deleted_at.is_(None),
)
sa.Index("provider_settings_updated_at", provider_settings.c.updated_at)

# Routes: `steps`, `cache_config` and `cool_down` hold the API's own shapes (camelCase), as
# validated by keymgmt, with every default filled in.
routes = sa.Table(
    "routes",
    metadata,
    sa.Column("route_id", UUID(as_uuid=False), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("key_ids", ARRAY(UUID(as_uuid=False)), nullable=False, server_default="{}"),
    sa.Column("steps", JSONB, nullable=False),
    sa.Column("retry_strategy", sa.Text, nullable=False),
    sa.Column("cache_config", JSONB, nullable=False),
    sa.Column("cool_down", JSONB, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("deleted_at", sa.DateTime(timezone=True)),  # a tombstone, as for keys
)
sa.Index(
    "routes_live_path",
    routes.c.path,
    unique=True,
    postgresql_where=routes.c.deleted_at.is_(None),
)
sa.Index("routes_updated_at", routes.c.updated_at)

usage_events = sa.Table(
    "usage_events",
    metadata,
    sa.Column("event_id", UUID(as_uuid=False), primary_key=True),
    sa.Column("request_id", sa.Text, nullable=False),
    sa.Column("key_id", UUID(as_uuid=False), nullable=False),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("prompt_tokens", sa.Integer, nullable=False),
    sa.Column("completion_tokens", sa.Integer, nullable=False),
    sa.Column("cached_tokens", sa.Integer, nullable=False),
    sa.Column("cost_nano", sa.BigInteger, nullable=False),
    sa.Column("latency_ms", sa.Double, nullable=False),
    sa.Column("upstream_ms", sa.Double, nullable=False),
    sa.Column("streamed", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("provider", sa.Text, nullable=False, server_default="openai"),
    sa.Column("setting_id", sa.Text, nullable=False, server_default=""),
    sa.Column("cache_creation_tokens", sa.Integer, nullable=False, server_default="0"),
    # What the key's policy did, when it has one: the action and the hits by entity type.
    sa.Column("policy_id", UUID(as_uuid=False)),
    sa.Column("policy_action", sa.Text),
    sa.Column("policy_counts", JSONB),
    # Migration 0005: the client's X-CUSTOM-EVENT-ID, X-METADATA and end user, and the bodies of
    # a key that logs them.
    sa.Column("custom_id", sa.Text),
    sa.Column("user_id", sa.Text),
    sa.Column("metadata", JSONB),
    sa.Column("request_content", sa.Text),
    sa.Column("request_truncated", sa.Boolean),
    sa.Column("response_content", sa.Text),
    sa.Column("response_truncated", sa.Boolean),
    # A route's call: its step and attempt (counted across steps); a cache hit, what it saved.
    sa.Column("route_id", sa.Text, nullable=False, server_default=""),
    sa.Column("route_step", sa.Integer, nullable=False, server_default="0"),
    sa.Column("route_attempt", sa.Integer, nullable=False, server_default="0"),
    sa.Column("cache_hit", sa.Boolean, nullable=False, server_default="false"),
    sa.Column("saved_cost_nano", sa.BigInteger, nullable=False, server_default="0"),
)
sa.Index("usage_events_key_time", usage_events.c.key_id, usage_events.c.created_at)
sa.Index("usage_events_time", usage_events.c.created_at)
# The spend restore reads the events recorded since a cutoff, and those of the last window.
sa.Index("usage_events_recorded_at", usage_events.c.recorded_at)

# Policies (PII detection and masking); deleted rows stay as tombstones, as keys do.
policies = sa.Table(
    "policies",
    metadata,
    sa.Column("policy_id", UUID(as_uuid=False), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("tags", ARRAY(sa.Text), nullable=False, server_default="{}"),
    sa.Column("rules", JSONB, nullable=False, server_default="{}"),  # entity -> action
    sa.Column("regex_rules", JSONB, nullable=False, server_default="[]"),  # [{definition, action}]
    sa.Column("restore", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("deleted_at", sa.DateTime(timezone=True)),
)
sa.Index(
    "usage_events_custom_id_time",
    usage_events.c.custom_id,
    usage_events.c.created_at,
    postgresql_where=usage_events.c.custom_id.isnot(None),
)
sa.Index(
    "usage_events_user_id_time",
    usage_events.c.user_id,
    usage_events.c.created_at,
    postgresql_where=usage_events.c.user_id.isnot(None),
)
# A key's custom ids and users, for GET /api/reporting/custom-ids and user-ids.
sa.Index(
    "usage_events_key_custom_id",
    usage_events.c.key_id,
    usage_events.c.custom_id,
    postgresql_where=usage_events.c.custom_id.isnot(None),
)
sa.Index(
    "usage_events_key_user_id",
    usage_events.c.key_id,
    usage_events.c.user_id,
    postgresql_where=usage_events.c.user_id.isnot(None),
)
sa.Index("usage_events_status_time", usage_events.c.status, usage_events.c.created_at)
sa.Index(
    "usage_events_policy_action_time",
    usage_events.c.policy_action,
    usage_events.c.created_at,
    postgresql_where=usage_events.c.policy_action.isnot(None),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", UUID(as_uuid=False), primary_key=True),
    sa.Column("user_id", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False, server_default=""),
    sa.Column("tags", ARRAY(sa.Text), nullable=False, server_default="{}"),
    sa.Column("key_ids", ARRAY(UUID(as_uuid=False)), nullable=False, server_default="{}"),
    sa.Column("revoked", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("revoked_reason", sa.Text, nullable=False, server_default=""),
    sa.Column("cost_limit_in_usd", sa.Double, nullable=False, server_default="0"),
    sa.Column("cost_limit_in_usd_over_time", sa.Double, nullable=False, server_default="0"),
    sa.Column("cost_limit_in_usd_unit", sa.String(1), nullable=False, server_default=""),
    sa.Column("rate_limit_over_time", sa.Integer, nullable=False, server_default="0"),
    sa.Column("rate_limit_unit", sa.String(1), nullable=False, server_default=""),
    sa.Column("ttl", sa.Text, nullable=False, server_default=""),
    sa.Column("expires_at", sa.DateTime(timezone=True)),
    sa.Column("allowed_paths", JSONB, nullable=False, server_default="[]"),
    sa.Column("allowed_models", ARRAY(sa.Text), nullable=False, server_default="{}"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("deleted_at", sa.DateTime(timezone=True)),
)
sa.Index("policies_updated_at", policies.c.updated_at)
sa.Index("policies_tags", policies.c.tags, postgresql_using="gin")
sa.Index("users_user_id", users.c.user_id)
sa.Index("users_updated_at", users.c.updated_at)
sa.Index("users_tags", users.c.tags, postgresql_using="gin")
sa.Index("users_key_ids", users.c.key_ids, postgresql_using="gin")

# Events Postgres refused or that could not be read, kept as they arrived instead of stalling the
# consumer. key_id and cost_nano are set when the event had valid ones: the charge is counted.
usage_events_rejected = sa.Table(
    "usage_events_rejected",
    metadata,
    sa.Column("entry_id", sa.Text, primary_key=True),  # the stream entry's id
    sa.Column("key_id", UUID(as_uuid=False)),
    sa.Column("cost_nano", sa.BigInteger),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("event", sa.Text, nullable=False),
    sa.Column("error", sa.Text, nullable=False),
)

# Held shared by every transaction that writes usage events, and alone while a spend restore
# takes its snapshot: a batch read from a Redis that was then lost is either in the snapshot or
# still to be read (advisory lock key, any constant).
EVENT_WRITE_LOCK = 7_226_330_152

# Each key's spend over all its recorded events (rejected ones included), kept by a trigger on
# both event tables in the inserting statement's transaction (migration 0003), counting only the
# rows actually inserted: restoring a key's spend reads one row, however many events it has.
key_spend = sa.Table(
    "key_spend",
    metadata,
    sa.Column("key_id", UUID(as_uuid=False), primary_key=True),
    sa.Column("cost_nano", sa.BigInteger, nullable=False),
    sa.Column("events", sa.BigInteger, nullable=False),
)


def key_from_row(row: Any) -> Key:
    return Key(
        key_id=str(row.key_id),
        name=row.name,
        key_hash=row.key_hash,
        created_at=row.created_at.timestamp(),
        updated_at=row.updated_at.timestamp(),
        tags=tuple(row.tags),
        revoked=row.revoked,
        revoked_reason=row.revoked_reason,
        cost_limit_in_usd=row.cost_limit_in_usd,
        cost_limit_in_usd_over_time=row.cost_limit_in_usd_over_time,
        cost_limit_in_usd_unit=row.cost_limit_in_usd_unit,
        rate_limit_over_time=row.rate_limit_over_time,
        rate_limit_unit=row.rate_limit_unit,
        ttl=row.ttl,
        expires_at=None if row.expires_at is None else row.expires_at.timestamp(),
        deleted=row.deleted_at is not None,
        setting_ids=tuple(row.setting_ids),
        rotation_enabled=row.rotation_enabled,
        policy_id=row.policy_id or "",
        allowed_paths=paths_of(row.allowed_paths),
        allowed_models=frozenset(row.allowed_models),
        rate_limits=windows_of(row.rate_limits),
        should_log_request=row.should_log_request,
        should_log_response=row.should_log_response,
    )


def policy_from_row(row: Any) -> Policy:
    return Policy(
        policy_id=str(row.policy_id),
        name=row.name,
        rules=dict(row.rules),
        regex_rules=tuple(RegexRule(r["definition"], r["action"]) for r in row.regex_rules),
        restore=row.restore,
        tags=tuple(row.tags),
        created_at=row.created_at.timestamp(),
        updated_at=row.updated_at.timestamp(),
        deleted=row.deleted_at is not None,
    )


def user_from_row(row: Any) -> User:
    return User(
        record_id=str(row.id),
        user_id=row.user_id,
        name=row.name,
        created_at=row.created_at.timestamp(),
        updated_at=row.updated_at.timestamp(),
        tags=tuple(row.tags),
        key_ids=tuple(str(key_id) for key_id in row.key_ids),
        revoked=row.revoked,
        revoked_reason=row.revoked_reason,
        cost_limit_in_usd=row.cost_limit_in_usd,
        cost_limit_in_usd_over_time=row.cost_limit_in_usd_over_time,
        cost_limit_in_usd_unit=row.cost_limit_in_usd_unit,
        rate_limit_over_time=row.rate_limit_over_time,
        rate_limit_unit=row.rate_limit_unit,
        ttl=row.ttl,
        expires_at=None if row.expires_at is None else row.expires_at.timestamp(),
        allowed_paths=paths_of(row.allowed_paths),
        allowed_models=frozenset(row.allowed_models),
        deleted=row.deleted_at is not None,
    )
