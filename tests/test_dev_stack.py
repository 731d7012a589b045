"""The dev (Docker) stack under mocks, built from the real Pulumi.dev.yaml."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import json5
import pulumi
import pytest

from components.docker.common import go_duration
from components.docker.jobs import job_check_script
from components.docker.juicefs_volume import MOUNTPOINT, SHARED_DIR
from components.docker.preflight import preflight_script
from components.juicefs.commands import mount_healthcheck
from components.nativelink import layout
from components.nativelink.render import Endpoints, render_cluster
from tests.mocks import RecordingMocks, image_id, is_secret, plaintext_strings, reveal
from tests.stacks import build, resolve_exports, stack_settings

if TYPE_CHECKING:
    from tests.mocks import Recorded

CONTAINER = "docker:index/container:Container"
VOLUME = "docker:index/volume:Volume"
NETWORK = "docker:index/network:Network"
IMAGE = "docker:index/remoteImage:RemoteImage"
PASSWORD = "random:index/randomPassword:RandomPassword"
COMMAND = "command:local:Command"
# Registered at the top, under the stack: what components share.
STACK_WIDE = ("nativelink-network",)
COMPONENTS = {
    "nativelink:metadata:RedisContainer": "nativelink-redis",
    "nativelink:storage:MinioContainer": "nativelink-minio",
    "nativelink:juicefs:DockerVolume": "nativelink-juicefs",
    "nativelink:cluster:DockerCluster": "nativelink",
}
WORKER = re.compile(r"^nativelink-worker-[0-9]+(-data)?$")
STATE_VOLUMES = ("nativelink-redis-data", "nativelink-minio-data", "nativelink-juicefs-cache")
ONE_SHOT = ("nativelink-juicefs-host-dir", "nativelink-worker-binary")
NATIVELINK = (
    "nativelink-cas",
    "nativelink-scheduler",
    "nativelink-worker-0",
    "nativelink-worker-1",
    "nativelink-worker-2",
)


def container(mocks: RecordingMocks, name: str) -> dict[str, Any]:
    """A container's recorded inputs, with secret values revealed."""
    inputs: dict[str, Any] = reveal(mocks.one(CONTAINER, name).inputs)
    return inputs


def dependency_names(record: Recorded) -> set[str]:
    return {dep._name for dep in record.depends_on}


@pytest.fixture
def dev(mocks: RecordingMocks) -> RecordingMocks:
    build(mocks, stack_settings("dev"))
    return mocks


# ---- shape of the graph


def test_builds_the_expected_resources(dev: RecordingMocks) -> None:
    counts = {typ: len(dev.of_type(typ)) for typ in (CONTAINER, VOLUME, NETWORK, IMAGE, PASSWORD, COMMAND)}
    # redis, minio, host-dir job, mount, cas, cas probe, scheduler, scheduler probe, worker-binary job,
    # 3 workers; volumes: redis, minio, cache, worker binary, 3 worker volumes; a check per one-shot job
    assert counts == {CONTAINER: 12, VOLUME: 7, NETWORK: 2, IMAGE: 7, PASSWORD: 3, COMMAND: 2}
    assert {typ: [r.name for r in dev.of_type(typ)] for typ in COMPONENTS} == {
        typ: [name] for typ, name in COMPONENTS.items()
    }


def test_every_resource_is_parented_by_a_component_whose_name_it_extends(dev: RecordingMocks) -> None:
    components = {id(r.resource): r for r in dev.resources if r.typ in COMPONENTS}
    for record in dev.resources:
        if record.typ == IMAGE or record.name in STACK_WIDE or record.typ in COMPONENTS:
            # Shared by several components: registered at the top, under the stack.
            assert record.parent is None, record.name
            continue
        parent = components.get(id(record.parent))
        assert parent is not None, f"{record.typ} {record.name} has no component parent"
        assert record.name.startswith(f"{parent.name}-"), record.name


def test_images_are_the_pinned_versions_and_kept_locally(dev: RecordingMocks) -> None:
    versions = stack_settings("dev").versions
    images = {r.inputs["name"]: r.inputs["keepLocally"] for r in dev.of_type(IMAGE)}
    assert images == {ref: True for ref in versions.model_dump(exclude={"juicefs_csi_chart"}).values()}


def test_a_plain_bridge_network_and_an_internal_one_for_the_workers(dev: RecordingMocks) -> None:
    networks = {record.name: record.inputs for record in dev.of_type(NETWORK)}
    assert networks == {
        "nativelink-network": {"name": "nativelink", "driver": "bridge"},
        "nativelink-workers": {"name": "nativelink-workers", "driver": "bridge", "internal": True},
    }


def test_build_actions_reach_only_the_cas_server_and_the_scheduler(dev: RecordingMocks) -> None:
    """Workers run untrusted build actions: no route to Redis, MinIO or the mount, and none out."""
    members: dict[str, set[str]] = {}
    for record in dev.of_type(CONTAINER):
        for network in reveal(record.inputs).get("networksAdvanced", []):
            members.setdefault(network["name"], set()).add(record.name)
    assert members["nativelink-workers"] == {"nativelink-cas", "nativelink-scheduler", *NATIVELINK[2:]}
    assert not members["nativelink"] & set(NATIVELINK[2:])


def test_long_running_containers_restart_run_and_answer_to_their_name(dev: RecordingMocks) -> None:
    for record in dev.of_type(CONTAINER):
        inputs = reveal(record.inputs)
        assert inputs["name"] == record.name
        if record.name in ONE_SHOT:
            assert inputs["restart"] == "no", record.name
            assert inputs["mustRun"] is False, record.name
            continue
        assert {"name": "nativelink", "aliases": [record.name]} in inputs["networksAdvanced"] or WORKER.match(
            record.name
        ), record.name
        assert inputs["restart"] == "unless-stopped", record.name
        assert inputs["mustRun"] is True, record.name


def test_nativelink_processes_log_at_the_configured_level(dev: RecordingMocks) -> None:
    for name in NATIVELINK:
        inputs = container(dev, name)
        assert "RUST_LOG=info" in inputs["envs"], name
        assert inputs["command"] == [layout.CONFIG_PATH], name
        assert "privileged" not in inputs, name


# ---- network exposure


def test_published_ports_are_on_loopback_only(dev: RecordingMocks) -> None:
    published = [port for r in dev.of_type(CONTAINER) for port in reveal(r.inputs).get("ports", [])]
    assert {(p["internal"], p["external"]) for p in published} == {(50051, 50051), (50052, 50052)}
    assert {p["ip"] for p in published} == {"127.0.0.1"}


def test_minio_console_is_published_on_loopback_only_when_asked(mocks: RecordingMocks) -> None:
    build(mocks, stack_settings("dev", docker={"ports": {"minioConsole": 9101}}))
    assert container(mocks, "nativelink-minio-server")["ports"] == [
        {"internal": 9001, "external": 9101, "ip": "127.0.0.1"}
    ]


def test_worker_api_port_is_never_published(dev: RecordingMocks) -> None:
    for record in dev.of_type(CONTAINER):
        for port in reveal(record.inputs).get("ports", []):
            assert layout.WORKER_API_PORT not in (port["internal"], port.get("external")), record.name


def test_redis_has_no_published_port(dev: RecordingMocks) -> None:
    assert not container(dev, "nativelink-redis-server").get("ports")


# ---- the JuiceFS mount


def test_mount_container_can_mount_fuse_and_share_it_with_the_host(dev: RecordingMocks) -> None:
    inputs = container(dev, "nativelink-juicefs-mount")
    assert inputs["capabilities"]["adds"] == ["CAP_SYS_ADMIN"]
    assert [device["hostPath"] for device in inputs["devices"]] == ["/dev/fuse"]
    assert inputs["securityOpts"] == ["apparmor:unconfined"]
    host_bind = [m for m in inputs["mounts"] if m["type"] == "bind"]
    assert host_bind == [
        {
            "type": "bind",
            "source": "/var/lib/nativelink-juicefs",
            "target": SHARED_DIR,
            "bindOptions": {"propagation": "rshared"},
        }
    ]
    # JuiceFS is mounted below the bind, never on it: a mount on the bind target stays in the container.
    assert MOUNTPOINT.startswith(SHARED_DIR + "/")
    cache = [m for m in inputs["mounts"] if m["type"] == "volume"]
    assert cache == [{"type": "volume", "source": "nativelink-juicefs-cache", "target": "/var/jfsCache"}]


def test_pulumi_waits_for_a_live_mount(dev: RecordingMocks) -> None:
    inputs = container(dev, "nativelink-juicefs-mount")
    assert inputs["healthcheck"]["tests"] == mount_healthcheck(MOUNTPOINT, f"{MOUNTPOINT}/nativelink")
    assert inputs["wait"] is True
    assert inputs["stopSignal"] == "SIGTERM"


def test_stateful_containers_stop_gracefully(dev: RecordingMocks) -> None:
    """`docker stop` uses stopTimeout; the provider's delete uses destroyGraceSeconds alone (0 kills at once)."""
    for name, at_least in (
        ("nativelink-juicefs-mount", 60),
        ("nativelink-redis-server", 30),
        ("nativelink-minio-server", 30),
        ("nativelink-cas", 30),
    ):
        inputs = container(dev, name)
        assert inputs["stopTimeout"] >= at_least, name
        assert inputs["destroyGraceSeconds"] >= at_least, name


def test_every_long_running_container_rotates_its_log(dev: RecordingMocks) -> None:
    for record in dev.of_type(CONTAINER):
        if record.name in ONE_SHOT:
            continue
        inputs = reveal(record.inputs)
        assert inputs["logDriver"] == "json-file", record.name
        assert set(inputs["logOpts"]) == {"max-size", "max-file"}, record.name


GO_DURATIONS = {5: "5s", 30: "30s", 60: "1m0s", 90: "1m30s", 120: "2m0s", 3600: "1h0m0s", 3661: "1h1m1s"}


def test_durations_are_spelled_as_go_writes_them_back() -> None:
    assert {seconds: go_duration(seconds) for seconds in GO_DURATIONS} == GO_DURATIONS


def test_healthcheck_durations_read_back_unchanged(dev: RecordingMocks) -> None:
    """The provider stores healthcheck durations as Go's Duration.String(); "120s" would read back "2m0s"
    and show as a change on every `preview --refresh`."""
    checked = 0
    for record in dev.of_type(CONTAINER):
        check = reveal(record.inputs).get("healthcheck")
        if check is None:
            continue
        for key in ("interval", "timeout", "startPeriod"):
            match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(\d+)s", check[key])
            assert match, (record.name, key, check[key])
            hours, minutes, seconds = (int(part or 0) for part in match.groups())
            assert go_duration(hours * 3600 + minutes * 60 + seconds) == check[key], (record.name, key)
            checked += 1
    assert checked == 3 * 8  # redis, minio, the mount, two probes, three workers


def test_mount_command_formats_then_mounts_with_secrets_only_in_env(dev: RecordingMocks) -> None:
    record = dev.one(CONTAINER, "nativelink-juicefs-mount")
    assert is_secret(record.inputs["command"])
    shell, flag, script = reveal(record.inputs["command"])
    assert (shell, flag) == ("sh", "-c")
    assert script.index("trap stop TERM INT") < script.index("juicefs format")
    assert (
        script.index("juicefs format")
        < script.index("juicefs mount")
        < script.index(f"mkdir -p {MOUNTPOINT}/nativelink")
    )
    assert "redis://nativelink-redis-server:6379/1" in script
    assert "--storage minio --bucket http://nativelink-minio-server:9000/nativelink-cas" in script
    # The object-store keys are read from the environment at every start, never stored in the volume.
    assert "--access-key" not in script.replace("--access-key ''", "")
    names = [entry.split("=", 1)[0] for entry in reveal(record.inputs["envs"])]
    assert names == ["META_PASSWORD", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"]


def test_mount_waits_for_its_host_directory_and_its_servers(dev: RecordingMocks) -> None:
    assert dependency_names(dev.one(CONTAINER, "nativelink-juicefs-mount")) == {
        "nativelink-juicefs-host-dir-succeeded",
        "nativelink-redis-server",
        "nativelink-minio-server",
    }


def test_host_directory_is_created_through_a_legacy_bind(dev: RecordingMocks) -> None:
    inputs = container(dev, "nativelink-juicefs-host-dir")
    assert [volume["hostPath"] for volume in inputs["volumes"]] == ["/var/lib/nativelink-juicefs"]
    assert inputs["mustRun"] is False
    assert inputs["attach"] is True


def test_the_host_preflight_runs_before_any_resource_on_every_up(mocks: RecordingMocks) -> None:
    registered_before: list[int] = []
    original = mocks.call

    def call(args: pulumi.runtime.MockCallArgs) -> tuple[dict[Any, Any], list[tuple[str, str]]]:
        registered_before.append(len(mocks.resources))
        return original(args)

    mocks.call = call  # type: ignore[method-assign]
    build(mocks, stack_settings("dev"))
    runs = [args for token, args in mocks.calls if token == "command:local:run"]
    assert len(runs) == 1
    assert runs[0]["command"] == '/bin/sh -c "$NATIVELINK_JUICEFS_PREFLIGHT"'
    assert runs[0]["environment"] == {
        "NATIVELINK_JUICEFS_PREFLIGHT": preflight_script("/var/lib/nativelink-juicefs", 2),
        "DOCKER_HOST": "unix:///var/run/docker.sock",
    }
    assert registered_before[0] == 0, "resources were registered before the preflight"


def test_capabilities_are_spelled_as_the_provider_reads_them_back(dev: RecordingMocks) -> None:
    """The Docker client sends `CAP_`-prefixed names (moby client/container_create.go), the daemon keeps
    them, and the provider reads them back as they are: any other spelling replaces the container on
    every refresh."""
    spelled = set()
    for record in dev.of_type(CONTAINER):
        capabilities = reveal(record.inputs).get("capabilities", {})
        spelled |= {*capabilities.get("adds", []), *capabilities.get("drops", [])}
    assert spelled == {"CAP_SYS_ADMIN", "ALL"}


def test_a_failed_preflight_stops_the_update_with_its_own_lines(mocks: RecordingMocks) -> None:
    """A failed invoke (here as the mocks report one) becomes a plain error of the script's own lines."""

    def call(args: pulumi.runtime.MockCallArgs) -> tuple[dict[Any, Any], list[tuple[str, str]]]:
        failure = (
            'exit status 1: running "/bin/sh -c \\"$NATIVELINK_JUICEFS_PREFLIGHT\\"":\n'
            "preflight: /dev/fuse is missing\npreflight: 1 problem(s); no container was created\n"
        )
        return {}, [("command", failure)]

    mocks.call = call  # type: ignore[method-assign]
    with pytest.raises(pulumi.RunError) as failed:
        build(mocks, stack_settings("dev"))
    assert str(failed.value) == "preflight: /dev/fuse is missing\npreflight: 1 problem(s); no container was created"
    assert mocks.resources == []


def test_a_preview_does_not_check_the_host(mocks: RecordingMocks) -> None:
    """Pull requests preview dev on machines that are not its Docker host."""
    pulumi.runtime.set_mocks(mocks, project="nativelink-juicefs", stack="test", preview=True)
    build(mocks, stack_settings("dev"))
    assert [token for token, _ in mocks.calls if token == "command:local:run"] == []
    assert len(mocks.of_type(CONTAINER)) == 12


@pytest.mark.parametrize("job", ONE_SHOT)
def test_a_failed_one_shot_job_fails_the_update(dev: RecordingMocks, job: str) -> None:
    """The provider ignores a one-shot container's exit code; a command checks it after each job."""
    (check,) = [record for record in dev.of_type(COMMAND) if record.name == f"{job}-succeeded"]
    assert check.inputs["create"] == job_check_script(job)
    assert check.inputs["triggers"] == [f"{job}-id"]
    assert dependency_names(check) == {job}


# ---- NativeLink


def test_cas_server_binds_the_shared_directory_and_sees_new_mounts(dev: RecordingMocks) -> None:
    inputs = container(dev, "nativelink-cas")
    assert inputs["mounts"] == [
        {
            "type": "bind",
            "source": "/var/lib/nativelink-juicefs",
            "target": layout.DOCKER_SHARED_DIR,
            "bindOptions": {"propagation": "rslave"},
        }
    ]
    assert layout.DOCKER_CAS_DATA.filesystem == f"{layout.DOCKER_SHARED_DIR}/jfs"
    assert dependency_names(dev.one(CONTAINER, "nativelink-cas")) == {"nativelink-juicefs-mount"}
    # It outlives a new mount container: nothing ties it to the mount container's id any more.
    assert "labels" not in inputs


def test_cas_server_cannot_write_the_mount_point_underneath(dev: RecordingMocks) -> None:
    """Without CAP_DAC_OVERRIDE root obeys the 0555 mount point the mount script leaves under JuiceFS."""
    assert container(dev, "nativelink-cas")["capabilities"] == {"drops": ["ALL"]}
    _, _, script = reveal(dev.one(CONTAINER, "nativelink-juicefs-mount").inputs["command"])
    assert f"chmod 0555 {MOUNTPOINT}" in script


def test_a_new_server_gets_a_new_probe_so_up_waits_for_it_again(dev: RecordingMocks) -> None:
    for target in ("nativelink-cas", "nativelink-scheduler"):
        labels = container(dev, f"{target}-probe")["labels"]
        assert labels == [{"label": "nativelink-juicefs.probe-target", "value": f"{target}-id"}]


def test_scheduler_waits_for_a_healthy_cas_server(dev: RecordingMocks) -> None:
    probe = container(dev, "nativelink-cas-probe")
    assert probe["healthcheck"]["tests"] == [
        "CMD",
        "wget",
        "-q",
        "-O",
        "/dev/null",
        "http://nativelink-cas:50081/status",
    ]
    assert probe["wait"] is True
    assert probe["command"] == ["sleep", "infinity"]
    assert dependency_names(dev.one(CONTAINER, "nativelink-cas-probe")) == {"nativelink-cas"}
    assert dependency_names(dev.one(CONTAINER, "nativelink-scheduler")) == {"nativelink-cas-probe"}


def test_workers_wait_for_a_healthy_scheduler(dev: RecordingMocks) -> None:
    probe = container(dev, "nativelink-scheduler-probe")
    assert probe["healthcheck"]["tests"][-1] == "http://nativelink-scheduler:50081/status"
    assert probe["wait"] is True
    assert dependency_names(dev.one(CONTAINER, "nativelink-scheduler-probe")) == {"nativelink-scheduler"}
    workers = [r for r in dev.of_type(CONTAINER) if WORKER.match(r.name)]
    assert [w.name for w in workers] == ["nativelink-worker-0", "nativelink-worker-1", "nativelink-worker-2"]
    for worker in workers:
        assert dependency_names(worker) == {"nativelink-scheduler-probe", "nativelink-worker-binary-succeeded"}


def test_pulumi_waits_until_every_worker_has_registered(dev: RecordingMocks) -> None:
    for name in NATIVELINK[2:]:
        inputs = container(dev, name)
        assert inputs["wait"] is True, name
        # An established connection to the scheduler's worker API port (50061 = 0xC38D).
        assert inputs["healthcheck"]["tests"][0] == "CMD-SHELL"
        assert ":C38D 01 " in inputs["healthcheck"]["tests"][1]
        assert "/proc/net/tcp" in inputs["healthcheck"]["tests"][1]


def test_workers_are_limited_and_reap_their_actions_orphans(dev: RecordingMocks) -> None:
    for name in NATIVELINK[2:]:
        inputs = container(dev, name)
        assert inputs["init"] is True, name
        # Spelled as the provider reads them back: anything else replaces the workers on every refresh.
        assert inputs["cpus"] == "2.0", name
        assert inputs["memory"] == inputs["memorySwap"] == 4 * 1000**3 // 2**20, name


def test_workers_run_the_nativelink_binary_inside_the_toolchain_image(dev: RecordingMocks) -> None:
    versions = stack_settings("dev").versions
    for name in ("nativelink-cas", "nativelink-scheduler"):
        assert container(dev, name)["image"] == image_id(versions.nativelink)
        assert "entrypoints" not in container(dev, name)
    copy = container(dev, "nativelink-worker-binary")
    assert copy["image"] == image_id(versions.nativelink_worker_init)
    assert copy["command"] == [layout.WORKER_BINARY]
    assert copy["attach"] is True
    assert copy["mounts"] == [{"type": "volume", "source": "nativelink-worker-binary", "target": "/opt/nativelink"}]
    for index in range(3):
        worker = container(dev, f"nativelink-worker-{index}")
        assert worker["image"] == image_id(versions.worker)
        assert worker["entrypoints"] == [layout.WORKER_BINARY]
        assert worker["command"] == [layout.CONFIG_PATH]
        binary_mount = {"type": "volume", "source": "nativelink-worker-binary", "target": "/opt/nativelink"}
        assert binary_mount | {"readOnly": True} in worker["mounts"]
        assert {"label": "nativelink-juicefs.worker-binary", "value": "nativelink-worker-binary-id"} in worker["labels"]


def test_each_worker_has_its_own_volume_at_the_worker_root(dev: RecordingMocks) -> None:
    sources = []
    for index in range(3):
        name = f"nativelink-worker-{index}"
        inputs = container(dev, name)
        assert inputs["mounts"][0] == {"type": "volume", "source": f"{name}-data", "target": layout.WORKER_ROOT}
        assert f"WORKER_NAME={name}" in inputs["envs"]
        sources.append(inputs["mounts"][0]["source"])
    assert len(set(sources)) == len(sources)
    assert {r.inputs["name"] for r in dev.of_type(VOLUME) if WORKER.match(r.name)} == set(sources)


def test_uploaded_configs_are_the_rendered_ones(dev: RecordingMocks) -> None:
    configs = render_cluster(
        stack_settings("dev"),
        Endpoints(cas_host="nativelink-cas", scheduler_host="nativelink-scheduler"),
        cas_data=layout.DOCKER_CAS_DATA,
        worker_cpus=2,
    )
    expected = {
        "nativelink-cas": configs.cas_server.to_json(),
        "nativelink-scheduler": configs.scheduler.to_json(),
        **{f"nativelink-worker-{i}": configs.worker.to_json() for i in range(3)},
    }
    for name, text in expected.items():
        (upload,) = container(dev, name)["uploads"]
        assert upload["file"] == layout.CONFIG_PATH
        assert upload["content"] == text, name
        assert json.loads(upload["content"]) == json5.loads(text), name


def test_worker_count_defaults_to_three(dev: RecordingMocks) -> None:
    assert stack_settings("dev").workers.count == 3
    assert len([r for r in dev.of_type(CONTAINER) if WORKER.match(r.name)]) == 3


# ---- secrets and state


def test_no_generated_secret_reaches_an_input_in_plain_text(dev: RecordingMocks) -> None:
    secrets = [f"generated-{r.name}-password" for r in dev.of_type(PASSWORD)]
    assert len(secrets) == 3
    for record in dev.resources:
        for text in plaintext_strings(record.inputs):
            for value in secrets:
                assert value not in text, f"{record.typ} {record.name} carries a secret in plain text"
    # The secrets are used, each inside a secret value.
    hidden = json.dumps([reveal(r.inputs) for r in dev.resources])
    assert all(value in hidden for value in secrets)


def test_no_default_minio_credentials(dev: RecordingMocks) -> None:
    everything = json.dumps([reveal(r.inputs) for r in dev.resources])
    assert "minioadmin" not in everything


def test_redis_config_is_a_secret_file_with_what_juicefs_needs(dev: RecordingMocks) -> None:
    record = dev.one(CONTAINER, "nativelink-redis-server")
    assert is_secret(record.inputs["uploads"])
    (upload,) = reveal(record.inputs["uploads"])
    lines = upload["content"].splitlines()
    assert "requirepass generated-nativelink-redis-password-password" in lines
    for line in ("appendonly yes", "appendfsync everysec", "maxmemory-policy noeviction", "dir /data"):
        assert line in lines
    inputs = reveal(record.inputs)
    assert inputs["command"] == ["redis-server", upload["file"]]
    assert inputs["healthcheck"]["tests"] == ["CMD-SHELL", "redis-cli ping | grep -q PONG"]
    assert [e.split("=", 1)[0] for e in inputs["envs"]] == ["REDISCLI_AUTH"]


def test_secret_exports_are_secret(mocks: RecordingMocks) -> None:
    exports = resolve_exports(build(mocks, stack_settings("dev")))
    for key in ("juicefsMetaUrl", "minioRootUser", "minioRootPassword"):
        secret, _ = exports[key]
        assert secret, key
    _, meta_url = exports["juicefsMetaUrl"]
    assert meta_url == "redis://nativelink-redis-server:6379/1"


def test_plain_exports(mocks: RecordingMocks) -> None:
    exports = resolve_exports(build(mocks, stack_settings("dev")))
    values = {key: value for key, (_, value) in exports.items()}
    assert {key: values[key] for key in ("bazelFlags", "casEndpoint", "schedulerEndpoint")} == {
        "bazelFlags": "--remote_executor=grpc://127.0.0.1:50052 --remote_cache=grpc://127.0.0.1:50051 "
        "--remote_upload_local_results=false",
        "casEndpoint": "grpc://127.0.0.1:50051",
        "schedulerEndpoint": "grpc://127.0.0.1:50052",
    }
    assert values["juicefsVolume"] == "nativelink-cas"
    assert values["juicefsMountPath"] == "/var/lib/nativelink-juicefs/jfs"
    secret, _ = exports["bazelFlags"]
    assert not secret


def test_bazel_flags_carry_the_instance_name(mocks: RecordingMocks) -> None:
    _, flags = resolve_exports(build(mocks, stack_settings("dev", nativelink={"instanceName": "main"})))["bazelFlags"]
    assert " --remote_instance_name=main" in flags


def test_bazel_uploads_results_only_where_clients_may(mocks: RecordingMocks) -> None:
    settings = stack_settings("dev", nativelink={"clientsUploadResults": True})
    _, flags = resolve_exports(build(mocks, settings))["bazelFlags"]
    assert "--remote_upload_local_results" not in flags


def test_state_volumes_are_retained_by_default(dev: RecordingMocks) -> None:
    for name in STATE_VOLUMES:
        record = dev.one(VOLUME, name)
        assert record.retain_on_delete, name
        assert not record.protect, name
    for record in dev.of_type(VOLUME):
        if WORKER.match(record.name):
            assert not record.retain_on_delete, record.name


def test_wipe_deletes_state_volumes(mocks: RecordingMocks) -> None:
    build(mocks, stack_settings("dev", docker={"wipeVolumesOnDestroy": True}))
    for name in STATE_VOLUMES:
        assert not mocks.one(VOLUME, name).retain_on_delete, name
