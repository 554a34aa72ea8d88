"""The cluster leg's Redis: a Redis Cluster of three masters with a replica each, started by the
bench, persisting as the standalone Redis of the other legs does, with every slot's spend marked
as held, as keymgmt marks it."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import redis

from tests.redisdeploy import ClusterDeployment

PERSISTENCE = ("appendonly", "appendfsync")


def persistence_of(client: redis.Redis) -> tuple[str, ...]:
    """The redis-server arguments that persist as `client`'s server does: the legs compare the
    proxy on each, not a cluster that fsyncs every write with a Redis that does not."""
    config = client.config_get("append*")
    return tuple(part for name in PERSISTENCE for part in (f"--{name}", str(config[name])))


def start(
    stack: contextlib.ExitStack, directory: Path, standalone: redis.Redis
) -> ClusterDeployment:
    """A cluster persisting as `standalone` does, stopped with `stack`, its spend marked held."""
    # A node that finds a previous run's nodes.conf would rejoin that run's cluster.
    shutil.rmtree(directory, ignore_errors=True)
    deployment = ClusterDeployment(directory, persistence=persistence_of(standalone))
    stack.enter_context(deployment)
    deployment.mark_spend_held()
    return deployment


def proxy_env(deployment: ClusterDeployment) -> dict[str, str]:
    """What a proxy needs to run on the cluster: every node as a seed, database 0, no password."""
    seeds = ",".join(f"{node.host}:{node.port}" for node in deployment.nodes)
    return {"REDIS_MODE": "cluster", "REDIS_HOSTS": seeds, "REDIS_DB": "0", "REDIS_PASSWORD": ""}
