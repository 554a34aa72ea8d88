"""Settings from the environment and Go-style durations."""

from __future__ import annotations

import pytest

from shared.config import ConfigError, Settings
from shared.durations import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("2s", 2),
        ("10m", 600),
        ("1h30m", 5400),
        ("2d", 172800),
        ("1.5h", 5400),
        ("0", 0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "2 s", "1y", "-1s", "s", "1h-5m", "nan"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_defaults_match_the_contract() -> None:
    settings = Settings.from_env({})
    assert settings.postgres.hosts == ("localhost",)
    assert settings.postgres.port == 5432
    assert settings.postgres.db_name == "postgres"
    assert (settings.postgres.read_timeout, settings.postgres.write_timeout) == (2, 1)
    assert (settings.redis.read_timeout, settings.redis.write_timeout) == (1, 0.5)
    assert settings.redis.db == 0
    assert settings.snapshot_interval == 10
    assert settings.openai_base_url == "https://api.openai.com/v1"
    assert (settings.keymgmt_port, settings.proxy_port) == (8001, 8002)
    assert settings.proxy_timeout == 600
    assert (settings.log_format, settings.log_level) == ("json", "info")
    assert settings.proxy_workers == 1


def test_values_are_read() -> None:
    settings = Settings.from_env(
        {
            "POSTGRESQL_HOSTS": "db1, db2",
            "POSTGRESQL_SSL_ENABLED": "true",
            "IN_MEMORY_DB_UPDATE_INTERVAL": "1h30m",
            "REDIS_DB": "3",
            "OPENAI_BASE_URL": "http://fake:9000/v1/",
        }
    )
    assert settings.postgres.hosts == ("db1", "db2")
    assert settings.postgres.ssl_enabled is True
    assert settings.snapshot_interval == 5400
    assert settings.redis.db == 3
    assert settings.openai_base_url == "http://fake:9000/v1"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("POSTGRESQL_READ_TIME_OUT", "soon"),
        ("REDIS_PORT", "http"),
        ("PROXY_PORT", "70000"),
        ("POSTGRESQL_SSL_ENABLED", "maybe"),
        ("LOG_FORMAT", "xml"),
        ("OPENAI_BASE_URL", "ftp://x"),
        ("POSTGRESQL_LISTEN_HOSTS", " , "),
    ],
)
def test_bad_value_names_the_variable_in_one_line(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({variable: value})
    message = str(raised.value)
    assert message.startswith(variable)
    assert "\n" not in message


def test_the_change_feed_listens_to_the_postgres_hosts_unless_told_otherwise() -> None:
    default = Settings.from_env({"POSTGRESQL_HOSTS": "pgbouncer"}).postgres
    assert default.for_listening().hosts == ("pgbouncer",)
    direct = Settings.from_env(
        {"POSTGRESQL_HOSTS": "pgbouncer", "POSTGRESQL_LISTEN_HOSTS": "db1, db2"}
    ).postgres
    assert direct.hosts == ("pgbouncer",)
    assert direct.for_listening().hosts == ("db1", "db2")
    assert direct.for_listening().port == direct.port


def test_secrets_are_not_in_the_repr() -> None:
    settings = Settings.from_env(
        {"OPENAI_API_KEY": "sk-upstream", "ADMIN_PASS": "pass-1", "POSTGRESQL_PASSWORD": "pg-pw"}
    )
    for secret in ("sk-upstream", "pass-1", "pg-pw"):
        assert secret not in repr(settings)


def test_redis_deployment_settings() -> None:
    default = Settings.from_env({}).redis
    assert (default.mode, default.sentinel_master, default.tls_enabled) == (
        "standalone",
        "mymaster",
        False,
    )
    assert (default.username, default.wait_replicas) == ("", 0)
    redis = Settings.from_env(
        {
            "REDIS_MODE": "Sentinel",
            "REDIS_HOSTS": "s1, s2:26380, [::1]:26381",
            "REDIS_PORT": "26379",
            "REDIS_SENTINEL_MASTER": "gateway",
            "REDIS_USERNAME": "proxy",
            "REDIS_TLS_ENABLED": "true",
            "REDIS_TLS_CA_FILE": "/etc/redis/ca.pem",
            "REDIS_WAIT_REPLICAS": "1",
        }
    ).redis
    assert redis.addresses() == [("s1", 26379), ("s2", 26380), ("::1", 26381)]
    assert (redis.mode, redis.sentinel_master, redis.username) == ("sentinel", "gateway", "proxy")
    assert (redis.tls_enabled, redis.tls_ca_file, redis.wait_replicas) == (
        True,
        "/etc/redis/ca.pem",
        1,
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [("REDIS_MODE", "galaxy"), ("REDIS_TLS_ENABLED", "sure"), ("REDIS_WAIT_REPLICAS", "-1")],
)
def test_bad_redis_deployment_values(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{variable}"):
        Settings.from_env({variable: value})


def test_cluster_mode_takes_seed_nodes() -> None:
    redis = Settings.from_env({"REDIS_MODE": "Cluster", "REDIS_HOSTS": "a:7000,b"}).redis
    assert (redis.mode, redis.addresses()) == ("cluster", [("a", 7000), ("b", 6379)])


def test_a_cluster_has_no_database_but_0() -> None:
    with pytest.raises(ConfigError, match=r"^REDIS_DB: a Redis Cluster has only database 0$"):
        Settings.from_env({"REDIS_MODE": "cluster", "REDIS_DB": "3"})
