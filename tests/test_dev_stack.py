"""The dev (Docker) stack under mocks, built from the real Pulumi.dev.yaml."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import json5
import pytest

from components.docker.juicefs_volume import MOUNTPOINT
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
COMPONENTS = {
    "nativelink:metadata:RedisContainer": "nativelink-redis",
    "nativelink:storage:MinioContainer": "nativelink-minio",
    "nativelink:juicefs:DockerVolume": "nativelink-juicefs",
    "nativelink:cluster:DockerCluster": "nativelink",
}
WORKER = re.compile(r"^nativelink-worker-[0-9]+(-data)?$")
STATE_VOLUMES = ("nativelink-redis-data", "nativelink-minio-data", "nativelink-juicefs-cache")
ONE_SHOT = ("nativelink-minio-bucket", "nativelink-juicefs-host-dir", "nativelink-worker-binary")
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
    counts = {typ: len(dev.of_type(typ)) for typ in (CONTAINER, VOLUME, NETWORK, IMAGE, PASSWORD)}
    # redis, minio, bucket job, host-dir job, mount, cas, cas probe, scheduler, scheduler probe,
    # worker-binary job, 3 workers; volumes: redis, minio, cache, worker binary, 3 worker volumes
    assert counts == {CONTAINER: 13, VOLUME: 7, NETWORK: 1, IMAGE: 7, PASSWORD: 3}
    assert {typ: [r.name for r in dev.of_type(typ)] for typ in COMPONENTS} == {
        typ: [name] for typ, name in COMPONENTS.items()
    }


def test_every_resource_is_parented_by_a_component_whose_name_it_extends(dev: RecordingMocks) -> None:
    components = {id(r.resource): r for r in dev.resources if r.typ in COMPONENTS}
    for record in dev.resources:
        if record.typ in (NETWORK, IMAGE) or record.typ in COMPONENTS:
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


def test_one_plain_bridge_network(dev: RecordingMocks) -> None:
    (network,) = dev.of_type(NETWORK)
    assert network.inputs == {"name": "nativelink", "driver": "bridge"}


def test_long_running_containers_restart_run_and_answer_to_their_name(dev: RecordingMocks) -> None:
    for record in dev.of_type(CONTAINER):
        inputs = reveal(record.inputs)
        assert inputs["name"] == record.name
        if record.name in ONE_SHOT:
            assert inputs["restart"] == "no", record.name
            assert inputs["mustRun"] is False, record.name
            continue
        assert inputs["networksAdvanced"] == [{"name": "nativelink", "aliases": [record.name]}]
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
    assert inputs["capabilities"]["adds"] == ["SYS_ADMIN"]
    assert [device["hostPath"] for device in inputs["devices"]] == ["/dev/fuse"]
    assert inputs["securityOpts"] == ["apparmor:unconfined"]
    host_bind = [m for m in inputs["mounts"] if m["type"] == "bind"]
    assert host_bind == [
        {
            "type": "bind",
            "source": "/var/lib/nativelink-juicefs/jfs",
            "target": MOUNTPOINT,
            "bindOptions": {"propagation": "rshared"},
        }
    ]
    cache = [m for m in inputs["mounts"] if m["type"] == "volume"]
    assert cache == [{"type": "volume", "source": "nativelink-juicefs-cache", "target": "/var/jfsCache"}]


def test_pulumi_waits_for_a_live_mount(dev: RecordingMocks) -> None:
    inputs = container(dev, "nativelink-juicefs-mount")
    assert inputs["healthcheck"]["tests"] == mount_healthcheck(MOUNTPOINT, f"{MOUNTPOINT}/nativelink")
    assert inputs["wait"] is True
    assert inputs["stopSignal"] == "SIGTERM"
    assert inputs["destroyGraceSeconds"] > 0


def test_mount_command_formats_then_mounts_with_secrets_only_in_env(dev: RecordingMocks) -> None:
    record = dev.one(CONTAINER, "nativelink-juicefs-mount")
    assert is_secret(record.inputs["command"])
    shell, flag, script = reveal(record.inputs["command"])
    assert (shell, flag) == ("sh", "-c")
    assert script.index("juicefs format") < script.index("juicefs mount") < script.index("mkdir -p /jfs/nativelink")
    assert "redis://nativelink-redis-server:6379/1" in script
    assert "--storage minio --bucket http://nativelink-minio-server:9000/nativelink-cas" in script
    names = [entry.split("=", 1)[0] for entry in reveal(record.inputs["envs"])]
    assert names == ["META_PASSWORD", "ACCESS_KEY", "SECRET_KEY"]


def test_mount_waits_for_its_host_directory_metadata_and_bucket(dev: RecordingMocks) -> None:
    assert dependency_names(dev.one(CONTAINER, "nativelink-juicefs-mount")) == {
        "nativelink-juicefs-host-dir",
        "nativelink-redis-server",
        "nativelink-minio-server",
        "nativelink-minio-bucket",
    }


def test_host_directory_is_created_through_a_legacy_bind(dev: RecordingMocks) -> None:
    inputs = container(dev, "nativelink-juicefs-host-dir")
    assert [volume["hostPath"] for volume in inputs["volumes"]] == ["/var/lib/nativelink-juicefs/jfs"]
    assert inputs["mustRun"] is False
    assert inputs["attach"] is True


# ---- NativeLink


def test_cas_server_binds_the_data_directory_inside_the_mount(dev: RecordingMocks) -> None:
    inputs = container(dev, "nativelink-cas")
    assert inputs["mounts"] == [
        {
            "type": "bind",
            "source": "/var/lib/nativelink-juicefs/jfs/nativelink",
            "target": layout.CAS_DATA_ROOT,
        }
    ]
    assert dependency_names(dev.one(CONTAINER, "nativelink-cas")) == {"nativelink-juicefs-mount"}


def test_cas_server_is_replaced_with_the_mount_container(dev: RecordingMocks) -> None:
    labels = container(dev, "nativelink-cas")["labels"]
    assert labels == [{"label": "nativelink-juicefs.mount-container", "value": "nativelink-juicefs-mount-id"}]


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
        assert dependency_names(worker) == {"nativelink-scheduler-probe", "nativelink-worker-binary"}


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
        stack_settings("dev"), Endpoints(cas_host="nativelink-cas", scheduler_host="nativelink-scheduler")
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


def test_bucket_job_takes_its_endpoint_from_the_environment(dev: RecordingMocks) -> None:
    record = dev.one(CONTAINER, "nativelink-minio-bucket")
    inputs = reveal(record.inputs)
    assert inputs["command"] == ["mb", "--ignore-existing", "store/nativelink-cas"]
    assert is_secret(record.inputs["envs"])
    assert [e.split("=", 1)[0] for e in inputs["envs"]] == ["MC_HOST_store"]
    assert inputs["mustRun"] is False
    assert dependency_names(record) == {"nativelink-minio-server"}


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
        "bazelFlags": "--remote_executor=grpc://127.0.0.1:50052 --remote_cache=grpc://127.0.0.1:50051",
        "casEndpoint": "grpc://127.0.0.1:50051",
        "schedulerEndpoint": "grpc://127.0.0.1:50052",
    }
    assert values["juicefsVolume"] == "nativelink-cas"
    assert values["juicefsMountPath"] == "/var/lib/nativelink-juicefs/jfs"
    secret, _ = exports["bazelFlags"]
    assert not secret


def test_bazel_flags_carry_the_instance_name(mocks: RecordingMocks) -> None:
    _, flags = resolve_exports(build(mocks, stack_settings("dev", nativelink={"instanceName": "main"})))["bazelFlags"]
    assert flags.endswith(" --remote_instance_name=main")


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
