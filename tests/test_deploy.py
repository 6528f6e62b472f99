"""The deployment files agree with the code: commands, options, variables, config keys, image.

Nothing here talks to Kubernetes or Docker: the manifests are parsed as YAML, every
`referrals-etl` command line in them is parsed against the real click command tree, every
`REFERRALS_ETL_*` variable is checked against the configuration reference, and the ConfigMap's
config.toml is loaded by ``load_settings``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from apscheduler.triggers.cron import CronTrigger

from etl.cli import cli
from etl.config import CONFIG_ENV, SECTIONS, all_keys, env_name, load_settings, parse_duration
from etl.ids import parse_shard

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "Dockerfile"
PROGRAM = "referrals-etl"
# Created by hand from the list of ids to backfill (see backfill-job.yaml).
MADE_BY_HAND = {("ConfigMap", "referrals-etl-backfill-ids")}
BUILD_TOOLS = re.compile(
    r"\b(apt-get install|apt install|apk add|yum install|dnf install|build-essential|gcc|g\+\+"
    r"|clang|make|cmake|python3?-dev|libpq-dev|pip wheel)\b"
)


# Reading the manifests -------------------------------------------------------------------


def _manifests() -> dict[str, list[dict[str, Any]]]:
    return {
        path.name: [d for d in yaml.safe_load_all(path.read_text("utf-8")) if d is not None]
        for path in sorted(K8S.glob("*.yaml"))
    }


MANIFESTS = _manifests()
DOCS = [doc for docs in MANIFESTS.values() for doc in docs]


def _one(kind: str, file: str | None = None) -> dict[str, Any]:
    found = [
        d
        for name, docs in MANIFESTS.items()
        for d in docs
        if d["kind"] == kind and file in (None, name)
    ]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    spec = doc.get("spec", {})
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    template = spec.get("template")
    return None if template is None else dict(template["spec"])


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    pod = _pod_spec(doc)
    if pod is None:
        return []
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


ALL_CONTAINERS = [(doc["metadata"]["name"], c) for doc in DOCS for c in _containers(doc)]


def _argv(container: dict[str, Any]) -> list[str]:
    """What the container runs: command + args, with the image's ENTRYPOINT/CMD as defaults."""
    entrypoint, cmd = _dockerfile_entrypoint_and_cmd()
    command = container.get("command", entrypoint)
    args = container.get("args", cmd if "command" not in container else [])
    return [str(a) for a in [*command, *args]]


def _env_names(container: dict[str, Any]) -> list[str]:
    return [e["name"] for e in container.get("env", [])]


# Reading the Dockerfile ------------------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text("utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = [[]]  # stage 0: instructions before the first FROM
    for keyword, rest in _dockerfile_instructions():
        if keyword == "FROM":
            stages.append([])
        stages[-1].append((keyword, rest))
    return stages


def _final_stage() -> list[tuple[str, str]]:
    return _stages()[-1]


def _dockerfile_entrypoint_and_cmd() -> tuple[list[str], list[str]]:
    final = dict(_final_stage())
    return json.loads(final["ENTRYPOINT"]), json.loads(final["CMD"])


def _dockerfile_env_names() -> list[str]:
    names = []
    for keyword, rest in _dockerfile_instructions():
        if keyword == "ENV":
            names += [token.split("=", 1)[0] for token in shlex.split(rest) if "=" in token]
    return names


# The command line, parsed like click does, without running anything ------------------------


def parse_command_line(argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Resolve ``referrals-etl ...`` against ``etl.cli.cli``: (command path, options used).

    Raises AssertionError naming the first unknown command, unknown option, bad option value,
    missing value or wrong number of arguments.
    """
    assert argv, argv
    assert argv[0] == PROGRAM, argv
    command: click.Command = cli
    path: list[str] = []
    used: dict[str, Any] = {}
    positional: list[str] = []
    tokens = argv[1:]
    i = 0
    while i < len(tokens):
        token = tokens[i]
        where = " ".join([PROGRAM, *path])
        if token.startswith("-") and token != "-":
            name, has_inline, inline = token.partition("=")
            option = next(
                (
                    p
                    for p in command.params
                    if isinstance(p, click.Option) and name in (*p.opts, *p.secondary_opts)
                ),
                None,
            )
            assert option is not None, f"`{where}` has no option {name}"
            if option.is_flag or option.count:
                assert not has_inline, f"`{where} {name}` takes no value"
                value: Any = True
            else:
                if not has_inline:
                    i += 1
                    assert i < len(tokens), f"`{where} {name}` needs a value"
                value = inline if has_inline else tokens[i]
                if "$(" not in value:  # a Kubernetes $(VAR) is only known in the pod
                    try:
                        value = option.type.convert(value, option, None)
                    except click.BadParameter as exc:
                        raise AssertionError(f"`{where} {name} {value}`: {exc}") from None
            used[option.name or name] = value
        elif isinstance(command, click.Group):
            sub = command.commands.get(token)
            assert sub is not None, (
                f"`{where}` has no command {token!r} ({sorted(command.commands)})"
            )
            command = sub
            path.append(token)
        else:
            positional.append(token)
        i += 1
    where = " ".join([PROGRAM, *path])
    assert not isinstance(command, click.Group), f"`{where}` needs a command"
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    assert len(positional) == len(arguments), f"`{where}` takes {len(arguments)} argument(s)"
    for param in command.params:
        if isinstance(param, click.Option) and param.required:
            assert param.name in used, f"`{where}` needs {param.opts[0]}"
    return path, used


def test_the_command_line_check_itself_rejects_what_click_rejects() -> None:
    """So that the manifest checks below can fail."""
    assert parse_command_line([PROGRAM, "--log-format", "json", "-v", "sync"]) == (
        ["sync"],
        {"log_format": "json", "verbose": True},
    )
    assert parse_command_line([PROGRAM, "db", "upgrade"]) == (["db", "upgrade"], {})
    for bad, reason in [
        ([PROGRAM, "synk"], "has no command 'synk'"),
        ([PROGRAM, "sync", "--no-such-option"], "has no option --no-such-option"),
        ([PROGRAM, "sync", "--concurrency", "0"], "--concurrency 0"),
        ([PROGRAM, "--log-format", "yaml", "sync"], "--log-format yaml"),
        ([PROGRAM, "backfill"], "takes 1 argument"),
        ([PROGRAM, "db"], "needs a command"),
        ([PROGRAM, "sync", "--limit"], "needs a value"),
    ]:
        with pytest.raises(AssertionError, match=re.escape(reason)):
            parse_command_line(bad)


# Manifests -------------------------------------------------------------------------------


def test_every_manifest_is_a_named_kubernetes_object() -> None:
    """Each file in deploy/k8s parses to objects with apiVersion, kind and a referrals-etl name."""
    assert set(MANIFESTS) == {
        "backfill-job.yaml",
        "configmap.yaml",
        "cronjob.yaml",
        "deployment.yaml",
        "pvc.yaml",
        "receiver.yaml",
        "secret.example.yaml",
    }
    for name, docs in MANIFESTS.items():
        assert docs, name
        for doc in docs:
            assert {"apiVersion", "kind", "metadata"} <= set(doc), name
            assert doc["metadata"]["name"].startswith("referrals-etl"), name


@pytest.mark.parametrize(
    ("where", "container"), ALL_CONTAINERS, ids=[f"{w}/{c['name']}" for w, c in ALL_CONTAINERS]
)
def test_container_command_lines_exist_in_the_cli(where: str, container: dict[str, Any]) -> None:
    """Every command, subcommand and option a container runs exists in `referrals-etl`, and
    its logs are JSON lines."""
    argv = _argv(container)
    path, used = parse_command_line(argv)
    assert path, f"{where}: {argv}"
    assert used.get("log_format") == "json", f"{where}: run with --log-format json: {argv}"


def _commands(doc: dict[str, Any]) -> list[tuple[list[str], dict[str, Any]]]:
    return [parse_command_line(_argv(c)) for c in _containers(doc)]


def test_every_referrals_etl_variable_is_a_setting() -> None:
    """REFERRALS_ETL_* names in the manifests (env, Secret keys) and in the Dockerfile exist
    in the configuration reference; a Secret key used by a container exists in the Secret."""
    known = {env_name(section, f.name) for section, f in all_keys()} | {CONFIG_ENV}
    secret = _one("Secret")
    secret_keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    used = set(secret_keys) | set(_dockerfile_env_names())
    for where, container in ALL_CONTAINERS:
        used.update(_env_names(container))
        for entry in container.get("env", []):
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref is not None:
                assert ref["name"] == secret["metadata"]["name"], (where, ref)
                assert ref["key"] in secret_keys, (where, ref)
        for source in container.get("envFrom", []):
            assert source.get("secretRef", {}).get("name") == secret["metadata"]["name"]
    ours = {name for name in used if name.startswith("REFERRALS_ETL_")}
    assert ours, "no REFERRALS_ETL_ variable found: the check would prove nothing"
    assert ours - known == set(), "not settings: see config.example.toml"
    assert {"REFERRALS_ETL_DATABASE_URL", CONFIG_ENV} <= ours


def test_the_secret_example_holds_placeholders_only() -> None:
    """The example Secret holds only CHANGE-ME placeholders in stringData, for secret settings."""
    secret = _one("Secret", "secret.example.yaml")
    assert "data" not in secret  # base64 could hide a real value
    values = secret["stringData"]
    assert values, values
    assert all("CHANGE-ME" in value for value in values.values()), values
    secrets = {env_name("auth", f.name) for s, f in all_keys() if f.metadata.get("secret")}
    assert set(values) - {"REFERRALS_ETL_DATABASE_URL"} <= secrets


def _configmap_toml(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    configmap = _one("ConfigMap", "configmap.yaml")
    text = configmap["data"]["config.toml"]
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path, tomllib.loads(text)


def test_the_configmap_config_loads_with_every_key(tmp_path: Path) -> None:
    """Every key of the ConfigMap's config.toml loads (no unknown key, no bad value), and the
    settings hold the values written there."""
    path, document = _configmap_toml(tmp_path)
    settings = load_settings(path, environ={})
    assert settings.source == str(path)
    count = 0
    for section, table in document.items():
        fields = {f.name: f for f in dataclasses.fields(SECTIONS[section])}
        for key, raw in table.items():
            loaded = getattr(getattr(settings, section), key)
            written = raw
            if fields[key].metadata.get("duration") and isinstance(raw, str):
                written = parse_duration(raw)
            assert written == loaded, f"[{section}] {key}: {raw!r} loaded as {loaded!r}"
            count += 1
    assert count >= 10
    assert settings.auth.mode == "refresh_token"
    CronTrigger.from_crontab(settings.schedule.cron)


def _volume_mount_for(doc: dict[str, Any], container: dict[str, Any], kind: str) -> dict[str, str]:
    """{mountPath: name of the ConfigMap / PVC / ...} for the volumes of ``kind`` mounted."""
    pod = _pod_spec(doc)
    assert pod is not None
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    out = {}
    for mount in container.get("volumeMounts", []):
        source = volumes[mount["name"]]
        if kind in source:
            ref = source[kind]
            out[mount["mountPath"]] = ref.get("name") or ref.get("claimName") or kind
    return out


def test_every_referenced_volume_source_is_defined() -> None:
    """Every ConfigMap, Secret and claim a workload mounts is defined in deploy/k8s."""
    defined = {(d["kind"], d["metadata"]["name"]) for d in DOCS} | MADE_BY_HAND
    for doc in DOCS:
        pod = _pod_spec(doc)
        if pod is None:
            continue
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in defined
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                assert ("PersistentVolumeClaim", claim) in defined
            if "secret" in volume:
                assert ("Secret", volume["secret"]["secretName"]) in defined


@pytest.mark.parametrize(
    "file", ["cronjob.yaml", "deployment.yaml", "backfill-job.yaml", "receiver.yaml"]
)
def test_workloads_run_as_the_image_user_with_the_mounted_config(file: str, tmp_path: Path) -> None:
    """REFERRALS_ETL_CONFIG names config.toml in the mounted ConfigMap; the token cache path
    is on a mounted writable volume; pods run as the Dockerfile's non-root uid."""
    [doc] = [d for d in MANIFESTS[file] if _pod_spec(d) is not None]
    _, document = _configmap_toml(tmp_path)
    uid = int(dict(_final_stage())["USER"].split(":")[0])
    pod = _pod_spec(doc)
    assert pod is not None
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == uid
    for container in _containers(doc):
        env = {e["name"]: e for e in container.get("env", [])}
        config_path = Path(env[CONFIG_ENV]["value"])
        configmaps = _volume_mount_for(doc, container, "configMap")
        assert configmaps.get(str(config_path.parent)) == "referrals-etl-config", container["name"]
        assert config_path.name == "config.toml"
        cache = env.get("REFERRALS_ETL_AUTH_TOKEN_CACHE_PATH", {}).get(
            "value", document["auth"]["token_cache_path"]
        )
        writable = {
            m["mountPath"] for m in container.get("volumeMounts", []) if not m.get("readOnly")
        }
        assert str(Path(cache).parent) in writable, (container["name"], cache)


def test_the_cronjob_never_overlaps_itself() -> None:
    """The CronJob forbids a second run while one is running (concurrencyPolicy Forbid)."""
    cronjob = _one("CronJob", "cronjob.yaml")
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    CronTrigger.from_crontab(cronjob["spec"]["schedule"])
    pod = _pod_spec(cronjob)
    assert pod is not None
    assert pod["restartPolicy"] == "Never"


def test_the_cronjob_migrates_before_it_syncs() -> None:
    """The CronJob's init container runs db upgrade; its container runs sync with metrics."""
    cronjob = _one("CronJob", "cronjob.yaml")
    pod = _pod_spec(cronjob)
    assert pod is not None
    [init] = pod["initContainers"]
    [main] = pod["containers"]
    assert parse_command_line(_argv(init))[0] == ["db", "upgrade"]
    path, used = parse_command_line(_argv(main))
    assert path == ["sync"]
    assert used.get("metrics_file") or used.get("pushgateway")


def test_the_cronjob_keeps_the_token_cache_on_its_claim() -> None:
    """The CronJob's container mounts the referrals-etl-state claim, which is defined."""
    cronjob = _one("CronJob", "cronjob.yaml")
    pod = _pod_spec(cronjob)
    assert pod is not None
    [main] = pod["containers"]
    claims = _volume_mount_for(cronjob, main, "persistentVolumeClaim")
    assert list(claims.values()) == ["referrals-etl-state"]
    assert _one("PersistentVolumeClaim")["metadata"]["name"] == "referrals-etl-state"


def test_the_backfill_job_shards_cover_every_index() -> None:
    """completions N, and `--shard $(JOB_COMPLETION_INDEX)/N`: pod I runs shard I of N."""
    job = _one("Job", "backfill-job.yaml")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    completions = spec["completions"]
    assert 1 <= spec["parallelism"] <= completions
    [container] = _containers(job)
    argv = _argv(container)
    path, used = parse_command_line(argv)
    assert path == ["backfill"]
    assert argv[argv.index("backfill") + 1] == "/ids/ids.txt"
    assert used["shard"] == f"$(JOB_COMPLETION_INDEX)/{completions}"
    assert _volume_mount_for(job, container, "configMap")["/ids"] == "referrals-etl-backfill-ids"
    assert "JOB_COMPLETION_INDEX" in _env_names(container)
    for index in range(completions):
        given = used["shard"].replace("$(JOB_COMPLETION_INDEX)", str(index))
        assert parse_shard(given) == (index, completions)


def test_the_deployment_runs_one_scheduler_with_time_to_finish(tmp_path: Path) -> None:
    """The Deployment runs exactly one scheduler and gives it time to finish a request on stop."""
    deployment = _one("Deployment", "deployment.yaml")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"]["type"] == "Recreate"  # never an old and a new scheduler at once
    pod = _pod_spec(deployment)
    assert pod is not None
    [main] = pod["containers"]
    assert parse_command_line(_argv(main))[0] == ["schedule"]
    _, document = _configmap_toml(tmp_path)
    # In-flight requests finish within api.timeout_seconds; leave room for a retry pause too.
    assert pod["terminationGracePeriodSeconds"] >= 3 * document["api"]["timeout_seconds"]


def test_the_receiver_port_is_the_one_everything_points_at(tmp_path: Path) -> None:
    """serve on the port the Service, the probes, the scrape annotation and the Ingress name;
    the Ingress exposes only webhook.path, with TLS."""
    deployment = _one("Deployment", "receiver.yaml")
    pod = _pod_spec(deployment)
    assert pod is not None
    [main] = pod["containers"]
    path, used = parse_command_line(_argv(main))
    assert path == ["serve"]
    assert used["host"] == "0.0.0.0"
    [port] = main["ports"]
    assert port["containerPort"] == used["port"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert main[probe]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port["containerPort"]
    assert annotations["prometheus.io/path"] == "/metrics"
    service = _one("Service", "receiver.yaml")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    [service_port] = service["spec"]["ports"]
    assert service_port["targetPort"] == port["name"]
    ingress = _one("Ingress", "receiver.yaml")
    assert ingress["apiVersion"] == "networking.k8s.io/v1"
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] in ingress["spec"]["tls"][0]["hosts"]
    _, document = _configmap_toml(tmp_path)
    [route] = rule["http"]["paths"]
    assert route["path"] == document["webhook"]["path"]
    backend = route["backend"]["service"]
    assert backend == {"name": service["metadata"]["name"], "port": {"name": "http"}}


# Dockerfile ------------------------------------------------------------------------------


def test_the_image_runs_a_slim_final_stage_as_non_root() -> None:
    """The Dockerfile builds in one stage and runs a pinned slim python stage as a non-root user."""
    stages = _stages()
    args = dict(
        rest.split("=", 1) for keyword, rest in stages[0] if keyword == "ARG" and "=" in rest
    )
    bases = []
    for stage in stages[1:]:
        base = stage[0][1].split()[0]
        bases.append(re.sub(r"\$\{(\w+)\}", lambda m: args[str(m.group(1))], base))
    assert len(stages) - 1 >= 2, "builder and final stages"
    # Pinned to a patch release and a Debian release (optionally a digest), the same for both
    # stages (the virtualenv's interpreter path must be valid in the final image).
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", bases[-1]), bases
    assert len(set(bases)) == 1, bases
    final = dict(_final_stage())
    user = final["USER"].split(":")[0]
    assert user not in {"root", "0"}
    assert any(k == "COPY" and r.startswith("--from=") for k, r in _final_stage())


def test_the_final_image_installs_no_build_tools() -> None:
    """The final stage installs no compiler or build tool."""
    for keyword, rest in _final_stage():
        if keyword == "RUN":
            assert not BUILD_TOOLS.search(rest), rest


COMPILERS = re.compile(r"\b(apt-get|apt|apk|yum|dnf)\b|build-essential|\bgcc\b|\bg\+\+|-dev\b")


def test_dependencies_are_installed_from_wheels_only() -> None:
    """Every dependency ships a wheel: the builder installs none from source (--only-binary),
    so it needs no compiler, and a dependency that stops shipping wheels fails the build."""
    for stage in _stages()[1:]:
        for keyword, rest in stage:
            if keyword == "RUN":
                assert not COMPILERS.search(rest), rest
    installs = [r for k, r in _stages()[1] if k == "RUN" and "pip install" in r]
    assert installs, installs
    assert all("--only-binary=:all:" in r for r in installs), installs


def test_bytecode_is_compiled_at_build_time() -> None:
    """The builder compiles the virtualenv once (unchecked hashes: valid whatever the files'
    times after COPY, never re-checked at start); the final image neither deletes .pyc files
    nor writes any (PYTHONDONTWRITEBYTECODE, read-only root filesystem)."""
    builder_runs = [r for k, r in _stages()[1] if k == "RUN"]
    compiled = [r for r in builder_runs if "compileall" in r]
    assert compiled, builder_runs
    assert all("--invalidation-mode unchecked-hash" in r and "/opt/venv" in r for r in compiled)
    assert all(" -f " in r for r in compiled)  # pip's own timestamp .pyc files are replaced
    builder_env = " ".join(r for k, r in _stages()[1] if k == "ENV")
    assert "PYTHONDONTWRITEBYTECODE" not in builder_env
    for keyword, rest in _final_stage():
        assert not re.search(r"\.pyc|__pycache__", rest) or keyword == "LABEL", rest
    final_env = dict(
        t.split("=", 1) for k, r in _final_stage() if k == "ENV" for t in shlex.split(r) if "=" in t
    )
    assert final_env["PYTHONDONTWRITEBYTECODE"] == "1"


def test_containers_write_only_to_their_mounted_state() -> None:
    """Every container: read-only root, no privilege escalation; what the image writes (HOME,
    the token cache, temporary files) is on a mounted volume."""
    final_env = dict(
        t.split("=", 1) for k, r in _final_stage() if k == "ENV" for t in shlex.split(r) if "=" in t
    )
    for where, container in ALL_CONTAINERS:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, where
        assert context["allowPrivilegeEscalation"] is False, where
        writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
        assert "/tmp" in writable, where
        assert final_env["HOME"] in writable, where
        cache = Path(final_env["REFERRALS_ETL_AUTH_TOKEN_CACHE_PATH"]).parent
        assert str(cache) in writable, where


def test_the_image_runs_the_console_script_with_sync_by_default() -> None:
    """The image's entrypoint is the console script and its default command is sync."""
    entrypoint, cmd = _dockerfile_entrypoint_and_cmd()
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]["scripts"]
    assert entrypoint == [PROGRAM]
    assert PROGRAM in scripts
    assert parse_command_line([*entrypoint, *cmd]) == (["sync"], {})


def test_the_image_checks_the_installed_package_finds_its_migrations() -> None:
    """The migrations are package data: the build copies nothing by hand and proves
    head_revision() works from the installed package."""
    builder_runs = " ".join(rest for keyword, rest in _stages()[1] if keyword == "RUN")
    assert "head_revision()" in builder_runs
    copies = [rest.split() for keyword, rest in _stages()[1] if keyword == "COPY"]
    assert ["migrations", "./migrations"] not in copies


def test_the_build_context_is_what_the_dockerfile_copies() -> None:
    """.dockerignore is an allow-list: everything the builder COPYs from the context, no more
    (no .git, .venv, databases or token caches)."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text("utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "**"
    allowed = {p[1:] for p in patterns if p.startswith("!")}
    sources: set[str] = set()
    for keyword, rest in _dockerfile_instructions():
        if keyword == "COPY" and not rest.startswith("--from"):
            sources.update(part.rstrip("*") for part in rest.split()[:-1])
    assert sources == {"pyproject.toml", "README", "LICENSE", "etl"}
    assert {"pyproject.toml", "README.md", "LICENSE", "etl"} == allowed


# Kubernetes: schema validation, failure policy, secrets, probes ---------------------------


def _kubernetes_validate(*files: Path) -> subprocess.CompletedProcess[str]:
    tool = Path(sys.executable).parent / "kubernetes-validate"
    assert tool.exists(), "kubernetes-validate is in the test extra: pip install -e '.[test]'"
    return subprocess.run(
        [str(tool), "--strict", "--quiet", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_manifest_validates_strictly_against_a_current_kubernetes() -> None:
    """`kubernetes-validate --strict` (its newest bundled Kubernetes schemas; unknown fields
    are errors) on every file under deploy/k8s/."""
    files = sorted(K8S.glob("*.yaml"))
    assert len(files) >= 6
    result = _kubernetes_validate(*files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_strict_validation_rejects_a_misspelled_field(tmp_path: Path) -> None:
    """The check above would catch a typo: the same Job with one field misspelled fails."""
    text = (K8S / "backfill-job.yaml").read_text("utf-8")
    broken = tmp_path / "job.yaml"
    broken.write_text(text.replace("backoffLimitPerIndex:", "backofLimitPerIndex:"), "utf-8")
    result = _kubernetes_validate(broken)
    assert result.returncode != 0
    assert "backofLimitPerIndex" in result.stdout + result.stderr


def test_the_backfill_job_never_reruns_a_shard_for_exit_1_or_75() -> None:
    """podFailurePolicy: exit 1 (some ids failed; later syncs retry them) and exit 75 (the
    shard's lease is held) fail that index without a rerun; 2 and 3 stop the whole Job;
    disruptions (eviction, drain) rerun without counting; retries are per index."""
    job = _one("Job", "backfill-job.yaml")
    spec = job["spec"]
    [container] = _containers(job)
    assert spec["backoffLimitPerIndex"] >= 1
    assert "backoffLimit" not in spec
    pod = _pod_spec(job)
    assert pod is not None
    assert pod["restartPolicy"] == "Never"
    actions: dict[int, str] = {}
    disruption = None
    for rule in spec["podFailurePolicy"]["rules"]:
        codes = rule.get("onExitCodes")
        if codes is not None:
            assert codes["operator"] == "In"
            assert codes["containerName"] == container["name"]
            for code in codes["values"]:
                actions.setdefault(code, rule["action"])  # the first matching rule wins
        else:
            assert [c["type"] for c in rule["onPodConditions"]] == ["DisruptionTarget"]
            disruption = rule["action"]
    assert actions[1] == actions[75] == "FailIndex"
    assert actions[2] == actions[3] == "FailJob"
    assert disruption == "Ignore"
    for retried in (4, 5, 143):  # API down, database, SIGTERM: a rerun can help
        assert retried not in actions


def _secret_keys(container: dict[str, Any]) -> set[str]:
    return {
        e["valueFrom"]["secretKeyRef"]["key"]
        for e in container.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }


def test_init_containers_get_only_the_secrets_they_use() -> None:
    """`db upgrade` needs the database URL (with its password) and no API credentials."""
    inits = [
        (doc["metadata"]["name"], c)
        for doc in DOCS
        for c in (_pod_spec(doc) or {}).get("initContainers", [])
    ]
    assert inits
    for where, init in inits:
        assert parse_command_line(_argv(init))[0] == ["db", "upgrade"], where
        assert _secret_keys(init) == {"REFERRALS_ETL_DATABASE_URL"}, where
        assert "envFrom" not in init, where


def test_the_schedule_deployment_serves_metrics_with_probes(tmp_path: Path) -> None:
    """schedule.metrics_port of the ConfigMap is the container's `metrics` port; startup,
    readiness and liveness probes GET /metrics there; the pod is annotated for scraping."""
    _, document = _configmap_toml(tmp_path)
    port = document["schedule"]["metrics_port"]
    assert port > 0
    assert document["schedule"].get("run_at_start", True) is True
    deployment = _one("Deployment", "deployment.yaml")
    [main] = _pod_spec(deployment)["containers"]  # type: ignore[index]
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert ports["metrics"] == port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = main[probe]["httpGet"]
        assert (get["path"], get["port"]) == ("/metrics", "metrics"), probe
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port
