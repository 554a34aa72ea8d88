"""Redis deployments the tests start themselves: TLS with a CA made here, an ACL user, a master
with a replica watched by a sentinel, a cluster of three masters with a replica each. Ports come
from 7100-7199."""

from __future__ import annotations

import datetime
import ipaddress
import itertools
import time
from dataclasses import dataclass, replace
from pathlib import Path

import redis
import services
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shared.config import RedisSettings
from shared.limit_keys import Layout
from shared.slots import SLOTS, slot_of, slot_tag

PORTS = range(7100, 7200)
_next_port = itertools.cycle(PORTS)
USER, USER_PASSWORD = "gateway", "acl-secret"
MASTER = "mymaster"


def free_port() -> int:
    for _ in PORTS:
        port = next(_next_port)
        if not services.reachable(services.HOST, port, timeout=0.1):
            return port
    raise RuntimeError("no free port in 7100-7199")


@dataclass(frozen=True)
class Tls:
    ca: Path
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_tls(directory: Path, common_name: str = "gateway test CA") -> Tls:
    """A CA of its own and a certificate it signed for 127.0.0.1 and localhost."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    san = x509.SubjectAlternativeName(
        [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("redis"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(san, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    tls = Tls(directory / "ca.pem", directory / "redis.pem", directory / "redis-key.pem")
    tls.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    tls.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tls.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    tls.key.chmod(0o600)
    return tls


@dataclass(frozen=True)
class Access:
    """How clients, replicas and sentinels reach the servers of one deployment."""

    tls: Tls | None = None
    acl: bool = False  # the default user is off; only USER may connect

    def server_args(self, port: int) -> list[str]:
        args = ["--port", str(port)]
        if self.tls is not None:
            args = [
                *("--port", "0", "--tls-port", str(port), "--tls-replication", "yes"),
                *("--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key)),
                *("--tls-ca-cert-file", str(self.tls.ca), "--tls-auth-clients", "no"),
            ]
        if self.acl:
            args += [
                *("--user", "default", "off"),
                *("--user", USER, "on", f">{USER_PASSWORD}", "~*", "&*", "+@all"),
                *("--masteruser", USER, "--masterauth", USER_PASSWORD),
            ]
        return args

    def client(self, port: int) -> redis.Redis:
        options: dict[str, object] = {"socket_timeout": 2}
        if self.tls is not None:
            options.update(ssl=True, ssl_ca_certs=str(self.tls.ca), ssl_check_hostname=True)
        if self.acl:
            options.update(username=USER, password=USER_PASSWORD)
        return redis.Redis(host=services.HOST, port=port, **options)  # type: ignore[arg-type]

    def settings(self, base: RedisSettings) -> RedisSettings:
        return replace(
            base,
            tls_enabled=self.tls is not None,
            tls_ca_file=str(self.tls.ca) if self.tls else "",
            username=USER if self.acl else "",
            password=USER_PASSWORD if self.acl else "",
        )


class RedisNode(services.Redis):
    """A redis-server (or sentinel) with the deployment's TLS and ACL, durable when asked:
    every write fsynced to the append-only file before it is acknowledged."""

    def __init__(
        self, data_dir: Path, access: Access, extra: tuple[str, ...] = (), durable: bool = False
    ) -> None:
        super().__init__(data_dir, free_port())
        self.access = access
        self.extra = list(extra)
        self.durable = durable

    def _command(self) -> list[str]:
        persistence = ["--appendonly", "no"]
        if self.durable:
            persistence = ["--appendonly", "yes", "--appendfsync", "always"]
        return [
            str(services._redis_binary()),
            *self.access.server_args(self.port),
            *("--bind", self.host, "--dir", str(self.data_dir), "--save", ""),
            *persistence,
            *self.extra,
        ]

    def _ready(self) -> bool:
        try:
            with self.access.client(self.port) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def client(self) -> redis.Redis:
        return self.access.client(self.port)


class SentinelNode(RedisNode):
    def __init__(self, data_dir: Path, access: Access, master: RedisNode) -> None:
        super().__init__(data_dir, access)
        self.master = master

    def _command(self) -> list[str]:
        lines = [
            f"sentinel monitor {MASTER} {self.host} {self.master.port} 1",
            f"sentinel down-after-milliseconds {MASTER} 1000",
            f"sentinel failover-timeout {MASTER} 4000",
        ]
        if self.access.acl:
            lines += [
                f"sentinel auth-user {MASTER} {USER}",
                f"sentinel auth-pass {MASTER} {USER_PASSWORD}",
            ]
        config = self.data_dir / "sentinel.conf"
        config.write_text("\n".join(lines) + "\n")
        # The sentinels themselves take no password: only the data nodes use the ACL.
        access = replace(self.access, acl=False)
        return [
            str(services._redis_binary()),
            str(config),
            "--sentinel",
            *access.server_args(self.port),
            *("--bind", self.host, "--dir", str(self.data_dir)),
        ]

    def _ready(self) -> bool:
        try:
            with self.client_without_acl() as client:
                return client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)
        except redis.RedisError:
            return False

    def client_without_acl(self) -> redis.Redis:
        return replace(self.access, acl=False).client(self.port)

    def knows_a_replica(self) -> bool:
        with self.client_without_acl() as client:
            replicas = client.execute_command("SENTINEL", "REPLICAS", MASTER)
        # A replica it saw in sync, as promoting one requires.
        return any(replica.get(b"master-link-status") == b"ok" for replica in replicas)

    def master_port(self) -> int:
        with self.client_without_acl() as client:
            return int(client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)[1])


class SentinelDeployment:
    """A master and a replica, both durable, and one sentinel that fails the master over."""

    def __init__(self, data_dir: Path, access: Access = Access()) -> None:
        self.access = access
        self.master = RedisNode(data_dir / "master", access, durable=True)
        self.replica = RedisNode(data_dir / "replica", access, durable=True)
        self.sentinel = SentinelNode(data_dir / "sentinel", access, self.master)

    def start(self) -> SentinelDeployment:
        self.master.start()
        self.replica.extra = ["--replicaof", self.master.host, str(self.master.port)]
        self.replica.start()
        self._wait(lambda: self.replica_synced(self.replica), "the replica to sync")
        self.sentinel.start()
        self._wait(self.sentinel.knows_a_replica, "the sentinel to see the replica in sync", 30)
        return self

    def stop(self) -> None:
        for node in (self.sentinel, self.replica, self.master):
            node.stop()

    def __enter__(self) -> SentinelDeployment:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def settings(self, base: RedisSettings) -> RedisSettings:
        # A sentinel that is gone comes first: the next one is asked.
        unreachable = f"{services.HOST}:{free_port()}"
        return replace(
            self.access.settings(base),
            mode="sentinel",
            sentinel_master=MASTER,
            hosts=(unreachable, f"{services.HOST}:{self.sentinel.port}"),
            wait_replicas=1,
        )

    def current_master(self) -> RedisNode:
        port = self.sentinel.master_port()
        return self.master if port == self.master.port else self.replica

    def kill_master(self) -> tuple[RedisNode, RedisNode]:
        """SIGKILL the master: (the dead one, the replica the sentinel is to promote)."""
        old = self.current_master()
        old.kill()
        return old, self.replica if old is self.master else self.master

    def wait_for_failover(self, new: RedisNode) -> None:
        self._wait(lambda: self.sentinel.master_port() == new.port, "the failover", 30)
        self._wait(lambda: new.client().role()[0] == b"master", "the promotion", 30)

    def rejoin(self, old: RedisNode, new: RedisNode) -> None:
        """Start the dead master again, as the new master's replica, and wait until it syncs."""
        old.extra = ["--replicaof", new.host, str(new.port)]
        old.start()
        self._wait(lambda: self.replica_synced(old), "the old master to sync", 30)

    @staticmethod
    def replica_synced(node: RedisNode) -> bool:
        try:
            with node.client() as client:
                return client.info("replication").get("master_link_status") == "up"
        except redis.RedisError:
            return False

    @staticmethod
    def _wait(done: object, what: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not done():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.05)


class ClusterDeployment:
    """A Redis Cluster of three masters, each with a replica, all durable, made with the cluster
    commands themselves (no redis-cli): slots split in three, every node met, replicas attached.
    `persistence`, redis-server arguments, replaces the durable nodes' (the benchmark's cluster
    persists as the standalone Redis it is compared with)."""

    MASTERS = 3
    NODE_TIMEOUT_MS = 1000  # a master unreachable this long is failed over by its replica

    def __init__(
        self, data_dir: Path, access: Access = Access(), persistence: tuple[str, ...] | None = None
    ) -> None:
        self.access = access
        extra = (
            *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
            *("--cluster-node-timeout", str(self.NODE_TIMEOUT_MS)),
            # Over TLS the bus port is the TLS port's plus 10000, not the plain port's (0).
            *(("--tls-cluster", "yes") if access.tls is not None else ()),
            # After the node's own persistence arguments: the last of each one counts.
            *(persistence or ()),
        )
        self.nodes = [
            RedisNode(data_dir / f"node{i}", access, extra, durable=persistence is None)
            for i in range(2 * self.MASTERS)
        ]

    def start(self) -> ClusterDeployment:
        for node in self.nodes:
            node.start()
        masters, replicas = self.nodes[: self.MASTERS], self.nodes[self.MASTERS :]
        share = SLOTS // self.MASTERS
        for i, node in enumerate(masters):
            last = SLOTS - 1 if i == self.MASTERS - 1 else (i + 1) * share - 1
            with node.client() as client:
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * share, last)
        with masters[0].client() as first:
            for node in self.nodes[1:]:
                first.execute_command("CLUSTER", "MEET", node.host, node.port)
        self._wait(self._all_known, "every node to know every other")
        for master, replica in zip(masters, replicas, strict=True):
            with replica.client() as client:
                client.execute_command("CLUSTER", "REPLICATE", self.node_id(master))
        self._wait(self._healthy, "the cluster to be up with a replica in sync per master", 30)
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> ClusterDeployment:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def mark_spend_held(self) -> None:
        """Set every slot's spend marker, as keymgmt does once it has restored any lost spend:
        a proxy started before that treats the cluster as one that lost its data."""
        layout = Layout(cluster=True)
        with self.nodes[0].client() as client:
            ranges = client.execute_command("CLUSTER", "SLOTS")
        for start, end, master, *_ in ranges:
            node = next(node for node in self.nodes if node.port == int(master[1]))
            markers = {layout.marker(f"{{{slot_tag(s)}}}"): "test" for s in range(start, end + 1)}
            with node.client() as client, client.pipeline(transaction=False) as pipeline:
                for name, value in markers.items():  # one MSET would cross slots
                    pipeline.set(name, value)
                pipeline.execute()

    def settings(self, base: RedisSettings) -> RedisSettings:
        # A seed that is gone comes first: the next one is asked.
        unreachable = f"{services.HOST}:{free_port()}"
        seeds = [f"{node.host}:{node.port}" for node in self.nodes[:2]]
        return replace(
            self.access.settings(base), mode="cluster", hosts=(unreachable, *seeds), db=0
        )

    @staticmethod
    def node_id(node: RedisNode) -> str:
        with node.client() as client:
            return str(client.execute_command("CLUSTER", "MYID").decode())

    def live(self) -> list[RedisNode]:
        return [node for node in self.nodes if node._proc is not None]

    def master_of(self, key: str) -> RedisNode:
        """The node serving `key`'s slot, as the first live node that answers sees it."""
        slot = slot_of(key)
        for asked in self.live():
            try:
                with asked.client() as client:
                    ranges = client.execute_command("CLUSTER", "SLOTS")
            except redis.RedisError:
                continue
            for start, end, master, *_ in ranges:
                if start <= slot <= end:
                    return next(node for node in self.nodes if node.port == int(master[1]))
        raise RuntimeError(f"no node serves slot {slot}")

    def kill_master_of(self, key: str) -> RedisNode:
        """SIGKILL the master serving `key`; its replica takes over after the node timeout."""
        master = self.master_of(key)
        master.kill()
        return master

    def wait_for_failover(self, key: str, old: RedisNode) -> RedisNode:
        self._wait(lambda: self._promoted(key, old), "a replica to take over", 30)
        return self.master_of(key)

    def rejoin(self, old: RedisNode) -> None:
        """Start a killed master again: it comes back as the replica of the one promoted."""
        old.start()
        self._wait(lambda: self._healthy() and SentinelDeployment.replica_synced(old), "rejoin", 30)

    def _promoted(self, key: str, old: RedisNode) -> bool:
        try:
            return self.master_of(key) is not old and self._healthy(ignore=old)
        except (RuntimeError, redis.RedisError):
            return False

    def _all_known(self) -> bool:
        for node in self.nodes:
            with node.client() as client:
                known = client.execute_command("CLUSTER", "NODES").decode().strip().splitlines()
                if len(known) < len(self.nodes) or "handshake" in " ".join(known):
                    return False
        return True

    def _healthy(self, ignore: RedisNode | None = None) -> bool:
        try:
            for node in self.live():
                if node is ignore:
                    continue
                with node.client() as client:
                    if (
                        client.execute_command("CLUSTER", "INFO").decode().find("cluster_state:ok")
                        < 0
                    ):
                        return False
                    if client.role()[0] == b"slave" and not SentinelDeployment.replica_synced(node):
                        return False
            return True
        except redis.RedisError:
            return False

    _wait = staticmethod(SentinelDeployment._wait)
