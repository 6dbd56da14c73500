"""Static checks of docker-compose.cluster.yaml, the 3-node Kafka override of docker-compose.yaml.

No Docker engine runs here, so the two files are merged the way `docker compose -f docker-compose.yaml
-f docker-compose.cluster.yaml` merges them (mappings key by key, everything else replaced) and the
result is read: one KRaft quorum of three, RF 3 and min ISR 2 everywhere, each node on its own ports
and volume, healthchecks, and every client waiting for all three healthy brokers."""
import re

import pytest

from test_stack_compose import COMPOSE, ROOT, argv, listeners, local_broker_properties, resolve

yaml = pytest.importorskip("yaml", reason="PyYAML is in the dev extra: make env")

OVERRIDE = ROOT / "docker-compose.cluster.yaml"
NODES = ("kafka", "kafka-2", "kafka-3")
CLIENTS = ("topics", "streamer", "primary", "secondary", "dashboard")
RF, MIN_ISR = 3, 2


def merge(base, override):
    """Compose's merge of an override file: mappings merge per key, sequences and scalars are replaced.
    (Compose appends some sequences, like ports; test_override_replaces_no_sequence_of_the_main_file
    keeps the override from relying on either.)"""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = merge(base[key], value) if key in base else value
        return out
    return override


def env_of(service) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


@pytest.fixture(scope="module")
def main():
    return resolve(yaml.safe_load(COMPOSE.read_text()))


@pytest.fixture(scope="module")
def override():
    return resolve(yaml.safe_load(OVERRIDE.read_text()))


@pytest.fixture(scope="module")
def merged(main, override):
    return merge(main, override)


@pytest.fixture(scope="module")
def services(merged):
    return merged["services"]


@pytest.fixture(scope="module")
def envs(services):
    return {name: env_of(services[name]) for name in NODES}


def test_merge_follows_compose():
    base = {"a": {"x": 1, "y": [1, 2]}, "b": "keep"}
    assert merge(base, {"a": {"x": 2, "y": [3]}, "c": 4}) == {"a": {"x": 2, "y": [3]}, "b": "keep", "c": 4}


def test_three_kafka_nodes_of_the_main_image(services):
    assert set(NODES) <= set(services)
    images = {services[n]["image"] for n in NODES}
    assert images == {services["kafka"]["image"]} and images.pop().startswith("apache/kafka:")
    assert sorted(k for k in services if services[k].get("image", "").startswith("apache/kafka:")
                  and k != "topics") == sorted(NODES)


def test_one_quorum_of_three(services, envs):
    ids = [envs[n]["KAFKA_NODE_ID"] for n in NODES]
    assert sorted(ids) == ["1", "2", "3"]
    assert len({envs[n]["CLUSTER_ID"] for n in NODES}) == 1, "every node is formatted with one cluster id"
    voters = {envs[n]["KAFKA_CONTROLLER_QUORUM_VOTERS"] for n in NODES}
    assert len(voters) == 1, f"the nodes disagree on the quorum: {voters}"
    expected = set()
    for n in NODES:
        env = envs[n]
        controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
        host = services[n].get("hostname", n)
        expected.add(f"{env['KAFKA_NODE_ID']}@{host}:{listeners(env['KAFKA_LISTENERS'])[controller][1]}")
    assert set(voters.pop().split(",")) == expected


def test_every_node_has_every_property_of_the_single_node(main, envs):
    """kafka-2 and kafka-3 are written out whole: nothing docker-compose.yaml's kafka sets may be missing,
    and what is not about identity, addresses or replication has the same value."""
    single = env_of(main["services"]["kafka"])
    per_node = {"KAFKA_NODE_ID", "KAFKA_LISTENERS", "KAFKA_ADVERTISED_LISTENERS", "KAFKA_CONTROLLER_QUORUM_VOTERS"}
    for n in NODES:
        missing = set(single) - set(envs[n])
        assert not missing, f"{n} lacks {sorted(missing)}"
        differ = {k for k in single if k not in per_node and not replication_key(k) and envs[n][k] != single[k]}
        assert not differ, f"{n} differs from the single node in {sorted(differ)}"


def replication_key(key: str) -> bool:
    return key.endswith("_REPLICATION_FACTOR") or key.endswith("_MIN_ISR") or key == "KAFKA_MIN_INSYNC_REPLICAS"


def test_replication_three_min_isr_two(envs):
    for n in NODES:
        rep = {k: v for k, v in envs[n].items() if replication_key(k)}
        assert {"KAFKA_DEFAULT_REPLICATION_FACTOR", "KAFKA_MIN_INSYNC_REPLICAS",
                "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"} <= set(rep), n
        for k, v in rep.items():
            assert v == str(MIN_ISR if k.endswith("_MIN_ISR") or k == "KAFKA_MIN_INSYNC_REPLICAS" else RF), \
                f"{n}: {k}={v}"


def test_same_properties_as_the_local_cluster(envs):
    """kafka/kafka.sh KAFKA_NODES=3 is the tested cluster: every property it writes is here, with the
    replication it computes for three nodes ($rf = 3, $min_isr = 2)."""
    props = {**local_broker_properties("PROPS"), **local_broker_properties("CLUSTER")}
    assert {"default.replication.factor", "min.insync.replicas"} <= set(props)
    test_only = {"group.min.session.timeout.ms"}
    for n in NODES:
        for key, value in props.items():
            if key in test_only:
                continue
            env_key = "KAFKA_" + key.upper().replace(".", "_")
            assert env_key in envs[n], f"{n} lacks {env_key} ({key} of kafka/kafka.sh)"
            if value in ("$rf", "$min_isr"):
                assert envs[n][env_key] == str(RF if value == "$rf" else MIN_ISR), f"{n}: {env_key}"


def test_each_node_on_its_own_listeners_ports_and_volume(merged, services, envs):
    host_ports, volumes = set(), set()
    for n in NODES:
        env = envs[n]
        lst = listeners(env["KAFKA_LISTENERS"])
        adv = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
        controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
        inter = env["KAFKA_INTER_BROKER_LISTENER_NAME"]
        host = services[n].get("hostname", n)
        assert controller in lst and controller not in adv
        assert set(adv) <= set(lst)
        assert adv[inter] == (host, 9092) and lst[inter][1] == 9092, f"{n}: containers reach it as {host}:9092"
        (outside,) = set(adv) - {inter}
        assert adv[outside] == ("localhost", lst[outside][1])
        published = [str(p) for p in services[n].get("ports", [])]
        port = lst[outside][1]
        assert published == [f"127.0.0.1:{port}:{port}"], f"{n} publishes {published}"
        host_ports.add(port)
        mounts = {v.split(":")[1]: v.split(":")[0] for v in services[n].get("volumes", [])}
        assert env["KAFKA_LOG_DIRS"] in mounts, f"{n}: its log dirs are not on a volume"
        assert mounts[env["KAFKA_LOG_DIRS"]] in merged["volumes"], f"{n}: not a named volume"
        volumes.add(mounts[env["KAFKA_LOG_DIRS"]])
    assert len(host_ports) == len(volumes) == len(NODES), (host_ports, volumes)


def test_every_node_has_a_healthcheck_and_restarts(services, envs):
    for n in NODES:
        hc = services[n].get("healthcheck") or {}
        test = " ".join(hc.get("test", []))
        assert "/opt/kafka/bin/kafka-broker-api-versions.sh --bootstrap-server localhost:9092" in test, n
        assert any(port == 9092 for _, port in listeners(envs[n]["KAFKA_LISTENERS"]).values())
        assert hc.get("retries") and hc.get("interval"), n
        assert services[n].get("restart") == "unless-stopped", n


def test_clients_wait_for_all_brokers_and_nodes_for_none(main, services):
    for n in NODES:
        deps = services[n].get("depends_on") or {}
        assert not set(deps) & set(NODES), f"{n} waits for {deps}: a node is healthy only once a quorum is up"
    for name in CLIENTS:
        deps = services[name]["depends_on"]
        assert {n: deps[n]["condition"] for n in NODES} == dict.fromkeys(NODES, "service_healthy"), name
        for dep, cond in main["services"][name]["depends_on"].items():
            assert deps[dep] == cond, f"{name}: the main file's dependency on {dep} is lost"


def test_topics_get_three_replicas_and_otherwise_match_the_main_file(main, services):
    single = " ".join(argv(main["services"]["topics"]))
    cluster = " ".join(argv(services["topics"]))
    assert re.findall(r"--replication-factor (\d+)", cluster) == [str(RF)] * 2
    assert cluster == single.replace("--replication-factor 1", f"--replication-factor {RF}"), \
        "the cluster's topics command drifted from docker-compose.yaml's"
    assert services["topics"]["image"] == services["kafka"]["image"]


def test_override_replaces_no_sequence_of_the_main_file(main, override):
    """Compose appends some sequences (ports, volumes) and replaces others: the override sets only
    mappings on the main file's services, and the topics command, which is replaced."""
    for name, service in override["services"].items():
        if name not in main["services"]:
            continue
        lists = {k for k, v in service.items() if isinstance(v, list)}
        assert lists <= ({"command"} if name == "topics" else set()), f"{name} overrides {lists}"
