"""A real replicated Redis for failover tests: one primary, one replica and three Sentinels
(``redis-server --sentinel``), each a child process with its own config and directory.

Sentinel timings are short (``down-after-milliseconds`` 1000) so a failover completes in a few
seconds. Every process is killed when the ``with`` block ends.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from conveyor.redis.embedded import find_server_binary
from support import free_port, wait_for

SERVICE = "mymaster"
HOST = "127.0.0.1"


class Cluster:
    """The processes of one primary/replica pair watched by three Sentinels."""

    def __init__(self, workdir: Path, sentinel_password: str | None = None) -> None:
        self.workdir = workdir
        #: The Sentinels' ``requirepass`` (they also use it with each other), if any.
        self.sentinel_password = sentinel_password
        self.binary = shutil.which("redis-server") or find_server_binary()
        self.nodes: dict[int, subprocess.Popen[bytes]] = {}
        self.sentinels: dict[int, subprocess.Popen[bytes]] = {}
        self.first_primary = free_port()
        self.first_replica = free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]

    # -- URLs and clients -------------------------------------------------------------------------
    def url(self, db: int = 0) -> str:
        """The ``redis+sentinel://`` URL naming the three Sentinels."""
        hosts = ",".join(f"{HOST}:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/{db}"

    def node(self, port: int) -> redis.Redis:
        """A plain client of one data node (no Sentinel involved); close it after use."""
        return redis.Redis(HOST, port, decode_responses=True, socket_timeout=5)

    def sentinel(self, index: int = 0) -> redis.Redis:
        return redis.Redis(
            HOST,
            self.sentinel_ports[index],
            password=self.sentinel_password,
            decode_responses=True,
            socket_timeout=5,
        )

    def primary_port(self) -> int:
        """The primary the Sentinels currently name."""
        client = self.sentinel()
        try:
            _, port = client.execute_command("SENTINEL", "get-master-addr-by-name", SERVICE)
            return int(port)
        finally:
            client.close()

    # -- processes ---------------------------------------------------------------------------
    def start_node(self, port: int, replica_of: int | None = None) -> None:
        directory = self.workdir / f"node-{port}"
        directory.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary,
            "--port", str(port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(directory),
            "--logfile", str(directory / "redis.log"),
            "--repl-diskless-sync", "yes",
            "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip
        if replica_of is not None:
            args += ["--replicaof", HOST, str(replica_of)]
        self.nodes[port] = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for(lambda: _pings(self.node(port)), timeout=10)

    def start(self) -> None:
        """Start the pair and the Sentinels; return once each Sentinel sees the replica and
        the two other Sentinels (a failover needs them)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.start_node(self.first_primary)
        self.start_node(self.first_replica, replica_of=self.first_primary)
        wait_for(lambda: self.replica_synced(self.first_replica), timeout=15)
        for port in self.sentinel_ports:
            conf = self.workdir / f"sentinel-{port}.conf"
            conf.write_text(
                "\n".join(
                    [
                        f"port {port}",
                        f"bind {HOST}",
                        "protected-mode no",
                        f"dir {self.workdir}",
                        f"logfile {self.workdir / f'sentinel-{port}.log'}",
                        f"sentinel monitor {SERVICE} {HOST} {self.first_primary} 2",
                        f"sentinel down-after-milliseconds {SERVICE} 1000",
                        f"sentinel failover-timeout {SERVICE} 4000",
                        f"sentinel parallel-syncs {SERVICE} 1",
                        *(
                            [f"requirepass {self.sentinel_password}"]
                            if self.sentinel_password
                            else []
                        ),
                        "",
                    ]
                )
            )
            self.sentinels[port] = subprocess.Popen(
                [self.binary, str(conf), "--sentinel"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        wait_for(self._sentinels_ready, timeout=30, interval=0.2)

    def _requirepass(self) -> list[str]:
        return [f"requirepass {self.sentinel_password}"] if self.sentinel_password else []

    def _sentinels_ready(self) -> bool:
        for index in range(len(self.sentinel_ports)):
            client = self.sentinel(index)
            try:
                info = client.sentinel_master(SERVICE)
            except redis.RedisError:
                return False
            finally:
                client.close()
            if int(info["num-slaves"]) < 1 or int(info["num-other-sentinels"]) < 2:
                return False
        return True

    def replica_synced(self, port: int) -> bool:
        client = self.node(port)
        try:
            info = client.info("replication")
            return info.get("role") == "slave" and info.get("master_link_status") == "up"
        except redis.RedisError:
            return False
        finally:
            client.close()

    def kill(self, port: int) -> float:
        """SIGKILL one data node; returns the time it was sent."""
        proc = self.nodes[port]
        proc.send_signal(signal.SIGKILL)
        at = time.time()
        proc.wait(10)
        return at

    def wait_promoted(self, old: int, timeout: float = 30.0) -> int:
        """Wait until every Sentinel names a primary other than ``old`` and that node says
        it is a primary; returns its port."""

        def promoted() -> bool:
            try:
                ports = set()
                for index in range(len(self.sentinel_ports)):
                    client = self.sentinel(index)
                    try:
                        reply = client.execute_command(
                            "SENTINEL", "get-master-addr-by-name", SERVICE
                        )
                    finally:
                        client.close()
                    ports.add(int(reply[1]))
                if len(ports) != 1 or old in ports:
                    return False
                node = self.node(ports.pop())
                try:
                    return bool(node.info("replication").get("role") == "master")
                finally:
                    node.close()
            except redis.RedisError:
                return False

        wait_for(promoted, timeout=timeout, interval=0.1)
        return self.primary_port()

    def stop(self) -> None:
        for proc in [*self.sentinels.values(), *self.nodes.values()]:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


@contextmanager
def sentinel_cluster(workdir: Path, sentinel_password: str | None = None) -> Iterator[Cluster]:
    """A started :class:`Cluster` under ``workdir``; every process is killed afterwards."""
    cluster = Cluster(workdir, sentinel_password)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
