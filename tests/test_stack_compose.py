"""Static checks of the Docker stack (docker-compose.yaml, Dockerfile, .dockerignore) and the Procfile.

No Docker engine runs on the development machines or in CI, so the files are read, not run: services,
Kafka's KRaft settings, dependency conditions, ports, and that every command names a program this repo
really provides."""
import base64
import os
import re
import shlex
import subprocess
import tomllib
import xml.etree.ElementTree as ET

import pytest

from conftest import ROOT

yaml = pytest.importorskip("yaml", reason="PyYAML is in the dev extra: make env")

COMPOSE = ROOT / "docker-compose.yaml"
APP_SERVICES = {"streamer", "primary", "secondary", "dashboard"}
WORKERS = ("primary", "secondary")

_INTERP = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def resolve(value):
    """Compose's ${VAR:-default} interpolation with every variable unset: the file's own defaults."""
    if isinstance(value, str):
        if "$$" in value:
            value = value.replace("$$", "\0")
        out = _INTERP.sub(lambda m: m.group(2) or "", value)
        assert "$" not in out, f"unresolved or unsupported interpolation in {value!r}"
        return out.replace("\0", "$")
    if isinstance(value, list):
        return [resolve(v) for v in value]
    if isinstance(value, dict):
        return {k: resolve(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def compose():
    return resolve(yaml.safe_load(COMPOSE.read_text()))


@pytest.fixture(scope="module")
def services(compose):
    return compose["services"]


@pytest.fixture(scope="module")
def kenv(services):
    env = services["kafka"]["environment"]
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


@pytest.fixture(scope="module")
def scripts():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def argv(service) -> list[str]:
    cmd = service.get("command")
    assert cmd, "service has no command"
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def opt(args: list[str], name: str) -> str:
    """Value of `--name value` or `--name=value`; fails when absent or repeated."""
    found = [args[i + 1] for i, a in enumerate(args[:-1]) if a == name]
    found += [a.split("=", 1)[1] for a in args if a.startswith(name + "=")]
    assert len(found) == 1, f"{name} given {len(found)} times in {args}"
    return found[0]


def check_program(args: list[str], scripts: dict) -> None:
    """The command runs a console script of this project, or `python -m <pkg>` with <pkg>/__main__.py."""
    if args[0] == "exec":
        args = args[1:]
    prog = args[0]
    if prog in ("python", "python3") or prog.endswith("/python"):
        assert args[1] == "-m", f"{args}: run packages with python -m"
        pkg = args[2]
        assert (ROOT / pkg.replace(".", "/") / "__main__.py").is_file() or \
            (ROOT / (pkg.replace(".", "/") + ".py")).is_file(), f"python -m {pkg}: no such module in this repo"
    else:
        assert prog in scripts, f"{prog!r} is not a [project.scripts] entry of pyproject.toml ({sorted(scripts)})"
        target_pkg = scripts[prog].split(":")[0].split(".")[0]
        assert (ROOT / target_pkg).is_dir(), f"{prog} points into {target_pkg!r}, which is not a package here"
    if "--application-module" in args:
        module = opt(args, "--application-module")
        assert (ROOT / module).is_dir() or (ROOT / f"{module}.py").exists(), f"no application module {module}"


def listeners(spec: str) -> dict[str, tuple[str, int]]:
    """'NAME://host:port,...' -> {NAME: (host, port)}"""
    out = {}
    for item in spec.split(","):
        m = re.fullmatch(r"([A-Z_]+)://([^:]*):(\d+)", item.strip())
        assert m, f"listener {item!r} is not NAME://host:port"
        out[m.group(1)] = (m.group(2), int(m.group(3)))
    return out


# --- services and images ---------------------------------------------------------------------------

def test_services_exist(services):
    assert {"kafka", "topics"} | APP_SERVICES <= set(services)


def test_kafka_is_the_official_image_of_the_local_brokers_version(services):
    image = services["kafka"]["image"]
    assert image.startswith("apache/kafka:"), image
    pom = ET.parse(ROOT / "kafka" / "pom.xml").getroot()
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    versions = [d.findtext("m:version", namespaces=ns) for d in pom.iterfind(".//m:dependency", ns)
                if d.findtext("m:artifactId", namespaces=ns) == "kafka_2.13"]
    assert versions and image == f"apache/kafka:{versions[0]}", \
        f"compose runs {image}, the local broker kafka/pom.xml {versions}: keep them on one version"


def test_app_services_build_this_repos_image(services):
    images = set()
    for name in APP_SERVICES:
        s = services[name]
        build = s.get("build")
        context = build if isinstance(build, str) else (build or {}).get("context")
        assert context in (".", "./"), f"{name} does not build the image from this repo"
        assert (ROOT / "Dockerfile").is_file()
        images.add(s.get("image"))
    assert len(images) == 1, f"the Python services should share one image, not {images}"


# --- Kafka: KRaft single node ----------------------------------------------------------------------

REQUIRED = ["KAFKA_NODE_ID", "KAFKA_PROCESS_ROLES", "KAFKA_LISTENERS", "KAFKA_ADVERTISED_LISTENERS",
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "KAFKA_INTER_BROKER_LISTENER_NAME",
            "KAFKA_CONTROLLER_LISTENER_NAMES", "KAFKA_CONTROLLER_QUORUM_VOTERS", "CLUSTER_ID", "KAFKA_LOG_DIRS",
            "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
            "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR",
            "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR"]


def test_kraft_properties_all_set(kenv):
    missing = [k for k in REQUIRED if not kenv.get(k)]
    assert not missing, f"the kafka image drops its defaults once any KAFKA_* is set; missing {missing}"
    assert set(kenv["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}


def local_broker_properties(heredoc: str = "PROPS") -> dict[str, str]:
    """What kafka/kafka.sh writes into server.properties: the `PROPS` heredoc every node gets, or the
    `CLUSTER` one it adds on a cluster (values unexpanded: `$rf`, `$min_isr`...)."""
    text = (ROOT / "kafka" / "kafka.sh").read_text()
    block = re.search(rf'cat >>? "\$node_dir/server.properties" <<{heredoc}\n(.*?)\n{heredoc}\n', text, re.S)
    assert block, f"cannot find the server.properties heredoc {heredoc} in kafka/kafka.sh"
    return dict(line.split("=", 1) for line in block.group(1).splitlines() if line and not line.startswith("#"))


def test_every_local_broker_property_is_in_compose(kenv):
    """kafka/kafka.sh's server.properties is the tested single-node set; compose must not drift from it."""
    keys = list(local_broker_properties())
    assert len(keys) > 10
    test_only = {"group.min.session.timeout.ms"}   # lets tests use short session timeouts
    missing = [k for k in keys if k not in test_only and "KAFKA_" + k.upper().replace(".", "_") not in kenv]
    assert not missing, f"properties of the local broker missing from compose: {missing}"


def test_replication_is_one(kenv):
    for k, v in kenv.items():
        if k.endswith("_REPLICATION_FACTOR") or k.endswith("_MIN_ISR"):
            assert v == "1", f"{k}={v} on a one-node cluster"


def test_listeners_are_consistent(kenv):
    lst = listeners(kenv["KAFKA_LISTENERS"])
    adv = listeners(kenv["KAFKA_ADVERTISED_LISTENERS"])
    pmap = dict(item.split(":") for item in kenv["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    controllers = kenv["KAFKA_CONTROLLER_LISTENER_NAMES"].split(",")
    inter = kenv["KAFKA_INTER_BROKER_LISTENER_NAME"]
    assert set(lst) <= set(pmap), "every listener needs a security protocol"
    assert all(c in lst for c in controllers), "the controller listener must be in KAFKA_LISTENERS"
    assert not set(controllers) & set(adv), "a controller listener is never advertised"
    assert set(adv) <= set(lst), "advertised listeners must be listeners"
    assert inter in adv and inter not in controllers
    assert len(set(lst) - set(controllers)) >= 2, "want one listener for containers and one for the host"
    # a single voter: this node, on its controller listener
    voters = kenv["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert len(voters) == 1
    node, _, hostport = voters[0].partition("@")
    assert node == kenv["KAFKA_NODE_ID"]
    assert int(hostport.rsplit(":", 1)[1]) == lst[controllers[0]][1]
    # the containers reach the broker as kafka:9092 on the inter-broker listener
    assert adv[inter] == ("kafka", 9092)
    assert lst[inter][1] == 9092


def test_cluster_id_is_a_base64_uuid(kenv):
    cid = kenv["CLUSTER_ID"]
    assert len(cid) == 22 and len(base64.urlsafe_b64decode(cid + "==")) == 16


def test_log_dirs_on_a_named_volume(compose, kenv):
    mounts = {v.split(":")[1]: v.split(":")[0] for v in compose["services"]["kafka"].get("volumes", [])}
    log_dirs = kenv["KAFKA_LOG_DIRS"]
    assert log_dirs in mounts, f"KAFKA_LOG_DIRS={log_dirs} is not on a volume"
    assert mounts[log_dirs] in (compose.get("volumes") or {}), f"{mounts[log_dirs]} is not a named volume"


def test_kafka_healthcheck(services, kenv):
    hc = services["kafka"].get("healthcheck")
    assert hc and hc.get("test")
    test = " ".join(hc["test"]) if isinstance(hc["test"], list) else hc["test"]
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in test
    assert "--bootstrap-server localhost:9092" in test
    assert any(port == 9092 for _, port in listeners(kenv["KAFKA_LISTENERS"]).values())


def test_kafka_published_on_loopback_only(services):
    for p in services["kafka"].get("ports", []):
        assert str(p).startswith("127.0.0.1:"), p


# --- topics, dependencies, commands -----------------------------------------------------------------

def test_topics_service_creates_both_topics(services):
    t = services["topics"]
    assert t["image"] == services["kafka"]["image"]
    script = " ".join(argv(t))
    assert "kafka-topics.sh" in script
    streamer_topic = opt(argv(services["streamer"]), "--topic")
    sink = opt(argv(services["primary"]), "--kafka_sink_topic")
    created = dict(re.findall(r"--create --if-not-exists\s+--topic (\S+) --partitions (\d+)", script))
    assert set(created) == {streamer_topic, sink}, created
    assert int(created[streamer_topic]) >= 2, "the workers split the source topic's partitions"
    assert "--bootstrap-server kafka:9092" in script
    assert t.get("restart", "no") == "no"


def test_dependency_conditions(services):
    def deps(name):
        d = services[name].get("depends_on") or {}
        assert isinstance(d, dict), f"{name}: depends_on needs conditions"
        return {k: v.get("condition") for k, v in d.items()}
    assert deps("topics") == {"kafka": "service_healthy"}
    for name in ("streamer", *WORKERS):
        assert deps(name).get("topics") == "service_completed_successfully", name
    assert deps("dashboard").get("kafka") == "service_healthy"


def test_workers_share_the_application_and_differ_in_name(services, scripts):
    a, b = (argv(services[w]) for w in WORKERS)
    assert a[0] == b[0] == "machida"
    for flag in ("--application-module", "--application-id", "--kafka_source_topic", "--kafka_sink_topic",
                 "--kafka_source_brokers", "--kafka_sink_brokers"):
        assert opt(a, flag) == opt(b, flag), flag
    assert opt(a, "--application-module") == "star_leaders"
    assert opt(a, "--name") != opt(b, "--name")
    assert {opt(a, "--name"), opt(b, "--name")} == set(WORKERS)
    for w in WORKERS:
        assert services[w].get("restart") in ("always", "unless-stopped", "on-failure") or \
            str(services[w].get("restart", "")).startswith("on-failure"), f"{w} needs a restart policy"


def test_pipeline_topics_line_up(services):
    s, w, d = argv(services["streamer"]), argv(services["primary"]), argv(services["dashboard"])
    assert opt(s, "--topic") == opt(w, "--kafka_source_topic") == opt(d, "--source-topic")
    assert opt(w, "--kafka_sink_topic") == opt(d, "--topic")
    assert opt(w, "--application-id") == opt(d, "--group")
    assert opt(s, "--kafka") == opt(w, "--kafka_source_brokers") == opt(d, "--kafka") == "kafka:9092"


def test_dashboard_asks_every_workers_query_port(services):
    # Each worker listens (and advertises, for forwarding) on its service name: the other containers
    # reach it there; nothing publishes a query port on the host.
    d = argv(services["dashboard"])
    want = []
    for w in WORKERS:
        args = argv(services[w])
        assert opt(args, "--query-host") == w
        assert not services[w].get("ports"), f"{w}'s query port is for the stack's own containers"
        want.append(f"{w}:{int(opt(args, '--query-port'))}")
    assert opt(d, "--query").split(",") == want


def stack_documented_settings() -> set[str]:
    """The STAR_LEADERS_* variables scripts/stack.sh's header documents."""
    header = (ROOT / "scripts" / "stack.sh").read_text().split("\nset -euo pipefail", 1)[0]
    return set(re.findall(r"^#   (STAR_LEADERS_[A-Z_]+)", header, re.M))


def test_names_come_from_the_stacks_variables_with_the_contracts_defaults():
    """Topics and group are `${VAR:-default}` under the names scripts/stack.sh documents, and both files
    default to stack_contract's values (what the Python services default to)."""
    import stack_contract
    contract = {"STAR_LEADERS_EVENTS_TOPIC": stack_contract.SOURCE_TOPIC,
                "STAR_LEADERS_LEADERBOARD_TOPIC": stack_contract.LEADERBOARD_TOPIC,
                "STAR_LEADERS_APP_ID": stack_contract.APP_NAME}
    text = COMPOSE.read_text()
    raw = yaml.safe_load(text)["services"]
    used = {}
    for name, default in _INTERP.findall(text):
        used.setdefault(name, set()).add(default)
    assert set(used) <= stack_documented_settings(), \
        f"compose reads variables scripts/stack.sh does not document: {set(used) - stack_documented_settings()}"
    for var, value in contract.items():
        assert used.get(var) == {value}, f"compose's defaults for {var}: {used.get(var)}, the contract's {value!r}"
    assert {var: stack_env()[var] for var in contract} == contract, "scripts/stack.sh's defaults"

    def variable(value):
        m = re.fullmatch(r"\$\{([A-Z_]+):-[^}]*\}", value)
        assert m, f"{value!r} is written out instead of taken from a variable"
        return m.group(1)

    def var_of(service, flag):
        return variable(opt(argv(raw[service]), flag))
    for service, flag, var in [("streamer", "--topic", "STAR_LEADERS_EVENTS_TOPIC"),
                               *[(w, "--kafka_source_topic", "STAR_LEADERS_EVENTS_TOPIC") for w in WORKERS],
                               *[(w, "--kafka_sink_topic", "STAR_LEADERS_LEADERBOARD_TOPIC") for w in WORKERS],
                               *[(w, "--application-id", "STAR_LEADERS_APP_ID") for w in WORKERS],
                               ("dashboard", "--source-topic", "STAR_LEADERS_EVENTS_TOPIC"),
                               ("dashboard", "--topic", "STAR_LEADERS_LEADERBOARD_TOPIC"),
                               ("dashboard", "--group", "STAR_LEADERS_APP_ID")]:
        assert var_of(service, flag) == var, (service, flag)
    created = re.findall(r"--create --if-not-exists\s+--topic (\S+)", " ".join(argv(raw["topics"])))
    assert [variable(t) for t in created] == ["STAR_LEADERS_EVENTS_TOPIC", "STAR_LEADERS_LEADERBOARD_TOPIC"]


def test_streamer_at_24x_with_cache_volume(compose, services):
    s = services["streamer"]
    args = argv(s)
    assert float(opt(args, "--speedup")) == 24
    assert opt(args, "--source")
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}-\d{1,2}", opt(args, "--start"))
    assert int(opt(args, "--hours")) > 0
    env = s.get("environment") or {}
    dockerfile_env = dict(re.findall(r"(GHARCHIVE_CACHE)=(\S+)", (ROOT / "Dockerfile").read_text()))
    cache = env.get("GHARCHIVE_CACHE") or dockerfile_env.get("GHARCHIVE_CACHE")
    assert cache, "the streamer's cache folder (GHARCHIVE_CACHE) is not set"
    mounts = dict(reversed(v.split(":")[:2]) for v in s.get("volumes", []))
    assert cache in mounts and mounts[cache] in (compose.get("volumes") or {}), \
        f"{cache} should be a named volume so downloaded hours survive"


def test_dashboard_published_on_loopback(services):
    d = services["dashboard"]
    args = argv(d)
    assert opt(args, "--host") == "0.0.0.0"
    ports = [str(p) for p in d.get("ports", [])]
    assert ports == [f"127.0.0.1:5000:{opt(args, '--port')}"], ports
    assert d.get("restart"), "the dashboard needs a restart policy"


def test_every_command_is_provided_by_this_repo(services, scripts):
    for name in APP_SERVICES:
        check_program(argv(services[name]), scripts)


def test_check_program_rejects_unknown_programs(scripts):
    with pytest.raises(AssertionError):
        check_program(["no-such-console-script"], scripts)
    with pytest.raises(AssertionError):
        check_program(["python", "-m", "no_such_package"], scripts)


def test_resolve_uses_the_files_defaults():
    assert resolve("127.0.0.1:${STAR_LEADERS_PORT:-5000}:5000") == "127.0.0.1:5000:5000"
    assert resolve("${X-a}b") == "ab"
    assert resolve("$${HOME}") == "${HOME}"


# --- Dockerfile -----------------------------------------------------------------------------------

def dockerfile_instructions():
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_base_image_and_install():
    ins = dockerfile_instructions()
    froms = [rest for word, rest in ins if word == "FROM"]
    assert froms and froms[-1].split()[0] == "python:3.11-slim", froms
    runs = [rest for word, rest in ins if word == "RUN"]
    copies = [rest.split() for word, rest in ins if word == "COPY"]
    # the whole context is copied somewhere, and that folder is pip-installed
    dests = [c[-1] for c in copies if c[0] == "."]
    assert dests, "the project is never copied into the image"
    assert any(re.search(rf"pip install\b[^&;]*\s{re.escape(d.rstrip('/'))}/?(\s|$)", r) for r in runs for d in dests), \
        "the project is not pip-installed"
    assert not any("[dev]" in r or "-e " in r for r in runs), "no dev extra, no editable install in the image"
    # dependencies: the pinned ones from pyproject.toml
    assert any("tomllib" in r and "dependencies" in r for r in runs)


def test_dockerfile_runs_as_non_root():
    users = [rest for word, rest in dockerfile_instructions() if word == "USER"]
    assert users and users[-1] not in ("root", "0"), users


def test_dockerignore_keeps_local_state_out():
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*", "whitelist: exclude everything, then re-include what the image needs"
    included = {ln[1:] for ln in lines if ln.startswith("!")}
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {"pyproject.toml", "wallaroo", "star_leaders", "archive_streamer", "dashboard"} <= included
    assert {p.rstrip("*") for p in packages} <= included, "every package of pyproject.toml goes into the image"
    assert not included & {".venv", ".stack", "kafka", ".git"}


# --- Procfile -------------------------------------------------------------------------------------

def procfile_entries():
    entries = {}
    for n, line in enumerate((ROOT / "Procfile").read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9_-]+):\s*(\S.*)", line)
        assert m, f"Procfile line {n} is not `name: command`: {line!r}"
        assert m.group(1) not in entries, f"Procfile names {m.group(1)} twice"
        entries[m.group(1)] = m.group(2)
    return entries


def test_procfile_parses_and_names_the_compose_services(services):
    from honcho.environ import parse_procfile
    entries = procfile_entries()
    assert set(entries) == APP_SERVICES
    assert APP_SERVICES <= set(services)
    assert dict(parse_procfile((ROOT / "Procfile").read_text()).processes) == entries


def test_procfile_commands_are_valid_shell():
    for name, cmd in procfile_entries().items():
        r = subprocess.run(["sh", "-n", "-c", cmd], capture_output=True, text=True)
        assert r.returncode == 0, f"{name}: {r.stderr}"


def stack_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAR_LEADERS_") and k != "KAFKA_PORT"}
    r = subprocess.run(["bash", str(ROOT / "scripts" / "stack.sh"), "env"], capture_output=True, text=True,
                       env=env, check=True)
    out = {}
    for line in r.stdout.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        out[name] = shlex.split(value)[0] if value else ""
    return out


def test_procfile_commands_with_the_stacks_defaults(scripts):
    defaults = stack_env()
    entries = procfile_entries()
    used = set(re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)", " ".join(entries.values())))
    assert used <= set(defaults), f"the Procfile uses variables scripts/stack.sh never sets: {used - set(defaults)}"
    assert "PORT" not in used, "$PORT is honcho's own per-process variable"

    def args_of(name):
        """The service's own command: the first simple command that is not a variable assignment."""
        expanded = re.sub(r"\$\{?([A-Z_][A-Z0-9_]*)\}?", lambda m: defaults[m.group(1)], entries[name])
        for part in re.split(r"&&|;", expanded):
            words = shlex.split(part)
            while words and words[0] in ("exec", "until", "do"):
                words = words[1:]
            if words[:2] == ["scripts/stack.sh", "supervise"]:      # supervise [--once] NAME COMMAND...
                words = words[2:]
                words = words[2:] if words[:1] == ["--once"] else words[1:]
            if words and "=" not in words[0]:
                return words
        raise AssertionError(f"no command in {entries[name]!r}")

    for name in entries:
        check_program(args_of(name), scripts)
    s, a, b, d = (args_of(n) for n in ("streamer", "primary", "secondary", "dashboard"))
    assert opt(s, "--source") == "synthetic", "offline machines need the synthetic source by default"
    for name in (*WORKERS, "dashboard"):     # restarted whenever they exit, like compose's restart policy
        assert entries[name].startswith(f"exec scripts/stack.sh supervise {name} "), name
    # not restarted (a replay starts from its first hour), but the supervisor keeps the stack up
    assert entries["streamer"].startswith("exec scripts/stack.sh supervise --once streamer archive-streamer ")
    assert opt(d, "--expected-workers") == str(len(WORKERS)) == str(
        sum(args_of(n)[0] == "machida" for n in entries)), "the dashboard expects every worker of the Procfile"
    assert float(opt(s, "--speedup")) > 0
    for flag in ("--application-module", "--application-id", "--kafka_source_topic", "--kafka_sink_topic"):
        assert opt(a, flag) == opt(b, flag), flag
    assert {opt(a, "--name"), opt(b, "--name")} == set(WORKERS)
    assert opt(s, "--topic") == opt(a, "--kafka_source_topic") == opt(d, "--source-topic")
    assert opt(a, "--kafka_sink_topic") == opt(d, "--topic")
    assert opt(a, "--application-id") == opt(d, "--group")
    assert opt(d, "--host") == "127.0.0.1"
    assert opt(d, "--port") == defaults["STAR_LEADERS_PORT"] == "5000"
    # the search box: the dashboard asks both workers' query ports (loopback, the workers' default host)
    queries = [f"127.0.0.1:{opt(w, '--query-port')}" for w in (a, b)]
    assert len(set(queries)) == 2 and "--query-host" not in a + b
    assert opt(d, "--query").split(",") == queries
    assert {opt(w, "--query-port") for w in (a, b)} == {defaults["STAR_LEADERS_PRIMARY_QUERY_PORT"],
                                                       defaults["STAR_LEADERS_SECONDARY_QUERY_PORT"]}
    assert opt(s, "--kafka") == opt(a, "--kafka_source_brokers") == opt(d, "--kafka") == "127.0.0.1:9092"
