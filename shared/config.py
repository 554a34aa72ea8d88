"""Settings of both services, read from the environment once at start."""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from shared.durations import parse_duration
from shared.secrets import parse_key


class ConfigError(Exception):
    """A setting is missing or malformed; the message is one line naming the variable."""


_LOG_LEVELS = ("debug", "info", "warning", "error")
_LOG_FORMATS = ("json", "text")


class _Reader:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def raw(self, name: str, default: str | None = None) -> str | None:
        value = self._environ.get(name)
        if value is None or value.strip() == "":
            return default
        return value.strip()

    def text(self, name: str, default: str) -> str:
        value = self.raw(name, default)
        assert value is not None
        return value

    def url(self, name: str, default: str) -> str:
        value = self.text(name, default).rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ConfigError(f"{name}: not an http(s) URL: {value!r}")
        return value

    def duration(self, name: str, default: str) -> float:
        value = self.text(name, default)
        try:
            return parse_duration(value)
        except ValueError as error:
            raise ConfigError(f"{name}: {error}") from None

    def integer(self, name: str, default: int, minimum: int = 0, maximum: int = 2**31) -> int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"{name}: not an integer: {value!r}") from None
        if not minimum <= number <= maximum:
            raise ConfigError(f"{name}: {number} is outside {minimum}..{maximum}")
        return number

    def fraction(self, name: str, default: float | None) -> float | None:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{name}: not a number: {value!r}") from None
        if not 0 < number <= 1:
            raise ConfigError(f"{name}: {number} is outside (0, 1]")
        return number

    def port(self, name: str, default: int) -> int:
        return self.integer(name, default, minimum=1, maximum=65535)

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}: not a boolean: {value!r} (use true or false)")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(name, default).lower()
        if value not in choices:
            raise ConfigError(f"{name}: {value!r} is not one of {', '.join(choices)}")
        return value

    def encryption_key(self, name: str) -> bytes:
        value = self.raw(name)
        if value is None:
            return b""
        try:
            return parse_key(value)
        except ValueError as error:
            raise ConfigError(f"{name}: {error}") from None

    def hosts(self, name: str, default: str) -> tuple[str, ...]:
        hosts = tuple(h.strip() for h in self.text(name, default).split(",") if h.strip())
        if not hosts:
            raise ConfigError(f"{name}: no host given")
        return hosts


@dataclass(frozen=True, slots=True)
class PostgresSettings:
    hosts: tuple[str, ...] = ("localhost",)
    port: int = 5432
    username: str = ""
    password: str = field(default="", repr=False)
    db_name: str = "postgres"
    ssl_enabled: bool = False
    read_timeout: float = 2.0
    write_timeout: float = 1.0
    listen_hosts: tuple[str, ...] = ()  # the change feed's; empty: the same as `hosts`

    def for_listening(self) -> PostgresSettings:
        """Where the change feed connects: LISTEN needs a session a pooler does not share."""
        return replace(self, hosts=self.listen_hosts or self.hosts)

    def target(self) -> str:
        """Which database these settings reach, for messages (never the password)."""
        # An empty user name means the operating system's, as libpq and asyncpg take it.
        user = self.username or getpass.getuser()
        return f"database {self.db_name!r} on {','.join(self.hosts)}:{self.port} as user {user!r}"


REDIS_MODES = ("standalone", "sentinel", "cluster")


@dataclass(frozen=True, slots=True)
class RedisSettings:
    hosts: tuple[str, ...] = ("localhost",)  # each `host` or `host:port`
    port: int = 6379  # of a host given without one
    password: str = field(default="", repr=False)
    db: int = 0
    read_timeout: float = 1.0
    write_timeout: float = 0.5
    mode: str = "standalone"
    sentinel_master: str = "mymaster"
    username: str = ""  # an ACL user; empty: the default user
    sentinel_username: str = ""  # the sentinels' own credentials, when they require any
    sentinel_password: str = field(default="", repr=False)
    tls_enabled: bool = False
    tls_ca_file: str = ""  # the CA that signed the servers' certificates; empty: the system's
    # Replicas that must hold a settle batch before it counts as applied (WAIT); 0: the master's
    # reply is enough, and a failover may lose the batches the replica had not received yet.
    wait_replicas: int = 0

    def addresses(self) -> list[tuple[str, int]]:
        """The hosts with their ports: the servers, or in sentinel mode the sentinels."""
        return [split_address(host, self.port) for host in self.hosts]


def split_address(host: str, default_port: int) -> tuple[str, int]:
    """`host`, `host:port` or `[v6]:port` as (host, port)."""
    name, colon, port = host.rpartition(":")
    if not colon or not port.isdigit() or (name.count(":") and not name.startswith("[")):
        return host.strip("[]"), default_port
    return name.strip("[]"), int(port)


@dataclass(frozen=True, slots=True)
class Settings:
    postgres: PostgresSettings = PostgresSettings()
    redis: RedisSettings = RedisSettings()
    openai_api_key: str = field(default="", repr=False)
    openai_base_url: str = "https://api.openai.com/v1"
    openai_organization: str = ""
    openai_project: str = ""
    anthropic_base_url: str = "https://api.anthropic.com"
    keymgmt_host: str = "0.0.0.0"
    keymgmt_port: int = 8001
    proxy_host: str = "0.0.0.0"
    proxy_port: int = 8002
    admin_pass: str = field(default="", repr=False)
    pricing_file: str = ""
    proxy_timeout: float = 600.0
    proxy_max_body_bytes: int = 25 * 1024 * 1024
    proxy_workers: int = 1
    snapshot_interval: float = 10.0
    log_format: str = "json"
    log_level: str = "info"
    statsd_address: str = ""
    redis_outage_mode: str = "local"
    # None: 1/(replicas announced in Redis, as last seen); set, it overrides that.
    redis_outage_share: float | None = None
    redis_outage_max: float = 300.0
    # 32 bytes that seal provider secrets (shared.secrets); empty: no secrets can be stored or read
    settings_encryption_key: bytes = field(default=b"", repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = _Reader(os.environ if environ is None else environ)
        hosts = env.hosts("POSTGRESQL_HOSTS", "localhost")
        postgres = PostgresSettings(
            hosts=hosts,
            port=env.port("POSTGRESQL_PORT", 5432),
            username=env.text("POSTGRESQL_USERNAME", ""),
            password=env.text("POSTGRESQL_PASSWORD", ""),
            db_name=env.text("POSTGRESQL_DB_NAME", "postgres"),
            ssl_enabled=env.boolean("POSTGRESQL_SSL_ENABLED", False),
            read_timeout=env.duration("POSTGRESQL_READ_TIME_OUT", "2s"),
            write_timeout=env.duration("POSTGRESQL_WRITE_TIME_OUT", "1s"),
            listen_hosts=env.hosts("POSTGRESQL_LISTEN_HOSTS", ",".join(hosts)),
        )
        redis = RedisSettings(
            hosts=env.hosts("REDIS_HOSTS", "localhost"),
            port=env.port("REDIS_PORT", 6379),
            password=env.text("REDIS_PASSWORD", ""),
            db=env.integer("REDIS_DB", 0, maximum=1023),
            read_timeout=env.duration("REDIS_READ_TIME_OUT", "1s"),
            write_timeout=env.duration("REDIS_WRITE_TIME_OUT", "500ms"),
            mode=env.choice("REDIS_MODE", "standalone", REDIS_MODES),
            sentinel_master=env.text("REDIS_SENTINEL_MASTER", "mymaster"),
            username=env.text("REDIS_USERNAME", ""),
            sentinel_username=env.text("REDIS_SENTINEL_USERNAME", ""),
            sentinel_password=env.text("REDIS_SENTINEL_PASSWORD", ""),
            tls_enabled=env.boolean("REDIS_TLS_ENABLED", False),
            tls_ca_file=env.text("REDIS_TLS_CA_FILE", ""),
            wait_replicas=env.integer("REDIS_WAIT_REPLICAS", 0, maximum=16),
        )
        if redis.mode == "cluster" and redis.db:
            raise ConfigError("REDIS_DB: a Redis Cluster has only database 0")
        return cls(
            postgres=postgres,
            redis=redis,
            openai_api_key=env.text("OPENAI_API_KEY", ""),
            openai_base_url=env.url("OPENAI_BASE_URL", "https://api.openai.com/v1"),
            openai_organization=env.text("OPENAI_ORGANIZATION", ""),
            openai_project=env.text("OPENAI_PROJECT", ""),
            anthropic_base_url=env.url("ANTHROPIC_BASE_URL", "https://api.anthropic.com"),
            keymgmt_host=env.text("KEYMGMT_HOST", "0.0.0.0"),
            keymgmt_port=env.port("KEYMGMT_PORT", 8001),
            proxy_host=env.text("PROXY_HOST", "0.0.0.0"),
            proxy_port=env.port("PROXY_PORT", 8002),
            admin_pass=env.text("ADMIN_PASS", ""),
            pricing_file=env.text("PRICING_FILE", ""),
            proxy_timeout=env.duration("PROXY_TIMEOUT", "600s"),
            proxy_max_body_bytes=env.integer(
                "PROXY_MAX_BODY_BYTES", 25 * 1024 * 1024, minimum=1024, maximum=2**31
            ),
            proxy_workers=env.integer("PROXY_WORKERS", 1, minimum=1, maximum=256),
            snapshot_interval=env.duration("IN_MEMORY_DB_UPDATE_INTERVAL", "10s"),
            log_format=env.choice("LOG_FORMAT", "json", _LOG_FORMATS),
            log_level=env.choice("LOG_LEVEL", "info", _LOG_LEVELS),
            statsd_address=env.text("STATSD_ADDRESS", ""),
            redis_outage_mode=env.choice("REDIS_OUTAGE_MODE", "local", ("local", "closed")),
            redis_outage_share=env.fraction("REDIS_OUTAGE_SHARE", None),
            redis_outage_max=env.duration("REDIS_OUTAGE_MAX", "5m"),
            settings_encryption_key=env.encryption_key("SETTINGS_ENCRYPTION_KEY"),
        )

    def require_upstream_key(self) -> None:
        if not self.openai_api_key:
            raise ConfigError("OPENAI_API_KEY: required by the proxy (the upstream credential)")
