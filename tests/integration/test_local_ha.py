"""The local HA set (primary, replicas, Sentinels) and the local Redis Cluster, on real
processes: replication of data and of the Search index, Sentinel-aware clients, a kill -9
failover, cluster routing and its limits, and that nothing outlives the tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from redis.cluster import RedisCluster
from redis.exceptions import ClusterCrossSlotError, RedisClusterException

from local_ha import HASetup, LocalCluster, measure_failover

ROOT = Path(__file__).resolve().parents[2]
WAIT_MS = 5000


def _gone(pid: int) -> bool:
    try:
        return b"redis-server" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True


def _wait_until_gone(pids: list[int], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(_gone(pid) for pid in pids):
            return True
        time.sleep(0.05)
    return False


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True, protocol=2)


# --- HA: primary, replicas, Sentinels ----------------------------------------------------------


@pytest.fixture(scope="module")
def ha() -> Iterator[HASetup]:
    with HASetup() as setup:
        yield setup


def test_replicas_are_linked_to_the_primary(ha: HASetup) -> None:
    primary_port = int(ha.primary_url.rsplit(":", 1)[1])
    assert len(ha.replica_urls) == 2
    for url in ha.replica_urls:
        info = _client(url).info("replication")
        assert info["role"] == "slave"
        assert info["master_link_status"] == "up"
        assert info["master_port"] == primary_port
    assert _client(ha.primary_url).info("replication")["connected_slaves"] == 2


def test_a_hash_written_on_the_primary_is_read_on_the_replicas(ha: HASetup) -> None:
    primary = _client(ha.primary_url)
    primary.hset("ha:hash", mapping={"name": "parka", "price": "120"})
    assert primary.wait(2, WAIT_MS) == 2
    for url in ha.replica_urls:
        assert _client(url).hgetall("ha:hash") == {"name": "parka", "price": "120"}


def test_the_search_index_replicates_and_replicas_answer_ft_search(ha: HASetup) -> None:
    primary = _client(ha.primary_url)
    primary.execute_command(
        "FT.CREATE", "ha:idx", "ON", "HASH", "PREFIX", "1", "ha:doc:",
        "SCHEMA", "name", "TEXT", "category", "TAG",
        "embedding", "VECTOR", "FLAT", "6", "TYPE", "FLOAT32", "DIM", "4", "DISTANCE_METRIC", "COSINE",
    )  # fmt: skip
    vectors = np.eye(4, dtype=np.float32)
    for i, category in enumerate(["coats", "coats", "boots", "bags"]):
        primary.hset(
            f"ha:doc:{i}", mapping={"name": f"item {i}", "category": category, "embedding": vectors[i].tobytes()}
        )
    assert primary.wait(2, WAIT_MS) == 2
    for url in ha.replica_urls:
        replica = _client(url)
        assert "ha:idx" in replica.execute_command("FT._LIST")
        found = replica.execute_command("FT.SEARCH", "ha:idx", "@category:{coats}", "NOCONTENT")
        assert found[0] == 2
        assert sorted(found[1:]) == ["ha:doc:0", "ha:doc:1"]
        nearest = replica.execute_command(
            "FT.SEARCH", "ha:idx", "*=>[KNN 1 @embedding $v]", "PARAMS", "2", "v", vectors[2].tobytes(),
            "NOCONTENT", "DIALECT", "2",
        )  # fmt: skip
        assert nearest[1:] == ["ha:doc:2"]
        with pytest.raises(redis.ReadOnlyError):
            replica.execute_command("FT.CREATE", "ha:other", "ON", "HASH", "SCHEMA", "name", "TEXT")


def test_sentinel_clients_write_to_the_primary_and_read_from_a_replica(ha: HASetup) -> None:
    sentinel = ha.sentinel_client(decode_responses=True, protocol=2)
    master = sentinel.master_for(ha.service)
    replica = sentinel.slave_for(ha.service)
    master.set("ha:via-sentinel", "written")
    assert master.wait(2, WAIT_MS) == 2
    assert replica.get("ha:via-sentinel") == "written"
    assert replica.info("replication")["role"] == "slave"
    assert sentinel.discover_master(ha.service) == ha.primary_address()
    with pytest.raises(redis.ReadOnlyError):
        replica.set("ha:via-sentinel", "refused")


def test_kill_9_of_the_primary_fails_over_to_a_replica() -> None:
    with HASetup() as setup:
        killed_url = setup.primary_url
        primary = _client(killed_url)
        primary.set("ha:before-kill", "kept")
        assert primary.wait(2, WAIT_MS) == 2

        seconds = measure_failover(setup)
        new_url = setup.wait_for_failover()
        print(
            f"kill -9 -> first write through master_for: {seconds:.2f} s (down-after {setup.down_after_ms} ms, "
            f"failover-timeout {setup.failover_timeout_ms} ms, load average {os.getloadavg()[0]:.2f})"
        )

        assert new_url != killed_url
        assert setup.primary_url == new_url
        new_primary = _client(new_url)
        assert new_primary.info("replication")["role"] == "master"
        assert new_primary.get("ha:before-kill") == "kept"
        assert new_primary.get("failover:probe") == "after"
        master = setup.sentinel_client(decode_responses=True, protocol=2).master_for(setup.service)
        master.set("ha:after-failover", "written")
        assert new_primary.get("ha:after-failover") == "written"

        # Sentinel repoints the surviving replica at the new primary.
        (survivor,) = setup.replica_urls
        new_port = int(new_url.rsplit(":", 1)[1])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            info = _client(survivor).info("replication")
            if info.get("master_port") == new_port and info.get("master_link_status") == "up":
                break
            time.sleep(0.1)
        assert master.wait(1, WAIT_MS) == 1
        assert _client(survivor).get("ha:after-failover") == "written"


def test_stop_leaves_no_process_and_no_temporary_folder() -> None:
    setup = HASetup(replicas=1, sentinels=1)
    setup.start()
    pids = [node.process.pid for node in setup.data_nodes + setup.sentinel_nodes if node.process]
    folder = setup.data_dir
    setup.stop()
    assert len(pids) == 3
    assert _wait_until_gone(pids, timeout_s=1)
    assert not folder.exists()


def test_a_given_data_dir_keeps_each_process_in_its_own_folder(tmp_path: Path) -> None:
    folder = tmp_path / 'a "quoted" folder with spaces'
    with HASetup(folder, replicas=1, sentinels=1) as setup:
        sentinel_conf = (folder / "sentinel-1" / "sentinel.conf").read_text()
        assert f"monitor {setup.service}" in sentinel_conf
        assert _client(setup.primary_url).config_get("dir")["dir"] == str((folder / "primary").resolve())
    assert sorted(p.name for p in folder.iterdir()) == ["primary", "replica-1", "sentinel-1"]
    assert (folder / "replica-1" / "redis.conf").read_text().count("replicaof") == 1


def test_bad_settings_are_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="quorum"):
        HASetup(sentinels=3, quorum=4)
    with pytest.raises(ValueError, match="pick one from 1024"):
        HASetup(base_port=65533)
    with pytest.raises(ValueError, match="service name"):
        HASetup(service="my master")
    with pytest.raises(ValueError, match="masters must be 1 or more"):
        LocalCluster(masters=0)


# --- Redis Cluster -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster() as local:
        yield local


@pytest.fixture
def cluster_client(cluster: LocalCluster) -> Iterator[RedisCluster]:
    client = RedisCluster(startup_nodes=cluster.startup_nodes, decode_responses=True, protocol=2)
    yield client
    client.close()


def test_cluster_spreads_keys_over_every_master(cluster: LocalCluster, cluster_client: RedisCluster) -> None:
    for i in range(300):
        cluster_client.set(f"spread:{i}", str(i))
    assert all(cluster_client.get(f"spread:{i}") == str(i) for i in range(300))
    per_node = [len(_client(url).keys("spread:*")) for url in cluster.node_urls]
    assert len(per_node) == 3
    assert all(count > 0 for count in per_node)
    assert sum(per_node) == 300
    assert RedisCluster.from_url(cluster.url, decode_responses=True).get("spread:7") == "7"


def test_a_script_on_two_keys_of_one_hash_tag_runs(cluster_client: RedisCluster) -> None:
    script = "redis.call('SET', KEYS[1], ARGV[1]); redis.call('SET', KEYS[2], ARGV[1]); return redis.call('MGET', KEYS[1], KEYS[2])"
    assert cluster_client.eval(script, 2, "{user:7}:recent", "{user:7}:seen", "x") == ["x", "x"]


def test_keys_of_two_slots_in_one_command_are_crossslot(cluster: LocalCluster, cluster_client: RedisCluster) -> None:
    assert cluster_client.keyslot("user:1") != cluster_client.keyslot("user:2")
    script = "return redis.call('MGET', KEYS[1], KEYS[2])"
    with pytest.raises(RedisClusterException, match="same key slot"):
        cluster_client.eval(script, 2, "user:1", "user:2")
    node = cluster_client.get_node_from_key("user:1")
    # The server's own CROSSSLOT reply, which redis-py raises as ClusterCrossSlotError.
    with pytest.raises(ClusterCrossSlotError):
        cluster_client.execute_command("EVAL", script, 2, "user:1", "user:2", target_nodes=node)
    with pytest.raises(ClusterCrossSlotError):
        _client(f"redis://{node.host}:{node.port}").execute_command("MSET", "user:1", "a", "user:2", "b")


def test_search_on_the_cluster_is_per_shard(cluster: LocalCluster, cluster_client: RedisCluster) -> None:
    """RediSearch 2.10 without a coordinator treats the index name as a key: FT.CREATE and
    FT.SEARCH go to the shard owning that name's slot, and the index there holds only that
    shard's hashes. A cluster-wide search needs an index per shard and a merge in the client."""
    schema = ("ON", "HASH", "PREFIX", "1", "shard:doc:", "SCHEMA", "name", "TEXT")
    cluster_client.execute_command("FT.CREATE", "shard:idx", *schema)
    owner = cluster_client.get_node_from_key("shard:idx")
    with_index = [url for url in cluster.node_urls if "shard:idx" in _client(url).execute_command("FT._LIST")]
    assert with_index == [f"redis://{owner.host}:{owner.port}"]

    # One index per shard: a hash tag whose slot that shard owns.
    per_shard_names: dict[str, str] = {}
    for tag in range(1000):
        name = f"shard:idx:{{{tag}}}"
        per_shard_names.setdefault(cluster_client.get_node_from_key(name).name, name)
    assert len(per_shard_names) == 3
    for name in per_shard_names.values():
        cluster_client.execute_command("FT.CREATE", name, *schema)

    documents = [f"shard:doc:{i}" for i in range(60)]
    for key in documents:
        cluster_client.hset(key, "name", "waterproof shell")
    keys_by_shard = {
        node: {key for key in documents if cluster_client.get_node_from_key(key).name == node}
        for node in per_shard_names
    }

    found = cluster_client.execute_command("FT.SEARCH", "shard:idx", "waterproof", "NOCONTENT", "LIMIT", 0, 100)
    assert set(found[1:]) == keys_by_shard[owner.name]
    assert len(keys_by_shard[owner.name]) < len(documents)
    merged = set()
    for node, name in per_shard_names.items():
        shard = cluster_client.execute_command("FT.SEARCH", name, "waterproof", "NOCONTENT", "LIMIT", 0, 100)
        assert set(shard[1:]) == keys_by_shard[node]
        merged |= set(shard[1:])
    assert merged == set(documents)


# --- the command line and the parent's death ---------------------------------------------------


def _start_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "local_ha.py"), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_until(process: subprocess.Popen[str], marker: str) -> list[str]:
    assert process.stdout is not None
    assert process.stderr is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if marker in line:
            return lines
    raise AssertionError(f"the CLI ended before printing {marker!r}: {''.join(lines)} {process.stderr.read()}")


def _pids_on(ports: list[int]) -> list[int]:
    return [int(_client(f"redis://127.0.0.1:{port}").info("server")["process_id"]) for port in ports]


def test_cluster_cli_prints_the_nodes_and_stops_them_on_sigterm() -> None:
    cli = _start_cli("cluster", "--masters", "1")
    try:
        lines = _read_until(cli, "Ctrl-C")
        (master,) = [line for line in lines if line.startswith("master")]
        port = int(master.split()[1].rsplit(":", 1)[1])
        pids = _pids_on([port])
        assert RedisCluster(host="127.0.0.1", port=port).cluster_info()["cluster_state"] == "ok"
        cli.send_signal(signal.SIGTERM)
        assert cli.wait(timeout=20) == 0
        assert _wait_until_gone(pids)
    finally:
        cli.kill()
        cli.communicate()


def test_processes_die_when_the_parent_is_killed(tmp_path: Path) -> None:
    # A parent killed with -9 cannot remove its temporary folder: give it one pytest removes.
    cli = _start_cli("ha", "--replicas", "1", "--sentinels", "1", "--data-dir", str(tmp_path))
    try:
        lines = _read_until(cli, "Ctrl-C")
        ports = [int(line.split()[1].rsplit(":", 1)[1]) for line in lines if line.split()[0] in ("primary", "replica")]
        ports += [int(line.split()[1].split(":")[1]) for line in lines if line.startswith("sentinel ")]
        assert len(ports) == 3
        pids = _pids_on(ports)
        cli.kill()
        cli.wait()
        assert _wait_until_gone(pids)
    finally:
        cli.kill()
        cli.communicate()


def _listen_below_bus_range() -> socket.socket:
    """A busy port low enough that the cluster's bus port (port + 10000) exists."""
    for port in range(24000, 25000):
        sock = socket.socket()
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            continue
        sock.listen()
        return sock
    raise AssertionError("no free port in 24000-24999")


def test_cli_errors_name_the_fix_without_a_traceback() -> None:
    with _listen_below_bus_range() as busy:
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, str(ROOT / "local_ha.py"), "cluster", "--masters", "1", "--base-port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert "--base-port" in result.stderr
    assert "Traceback" not in result.stderr
    result = subprocess.run(
        [sys.executable, str(ROOT / "local_ha.py"), "ha", "--sentinels", "0"], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "error: sentinels must be 1 or more" in result.stderr
