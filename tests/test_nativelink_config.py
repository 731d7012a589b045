"""The rendered NativeLink configs: valid JSON5 of the v1.6.6 structure, and the layout rules hold."""

from __future__ import annotations

import json
from typing import Any

import json5
import pytest

from components.nativelink import layout
from components.nativelink.render import (
    AC_FILES_STORE,
    AC_STORE,
    CAS_FILES_STORE,
    CAS_STORE,
    REMOTE_CAS_STORE,
    SCHEDULER,
    WORKER_FAST_SLOW_STORE,
    ClusterConfigs,
    Endpoints,
    render_cluster,
)
from components.nativelink.rules import check_configs, filesystem_stores, process_filesystems
from components.nativelink.schema import CasConfig
from components.settings import Settings
from tests.stacks import stack_settings

ENDPOINTS = Endpoints(cas_host="nativelink-cas", scheduler_host="nativelink-scheduler")
WORKER_CPUS = 4


def render(settings: Settings, cas_data: layout.CasData = layout.CSI_CAS_DATA) -> ClusterConfigs:
    return render_cluster(settings, ENDPOINTS, cas_data=cas_data, worker_cpus=WORKER_CPUS)


@pytest.fixture
def settings() -> Settings:
    return stack_settings("dev")


@pytest.fixture
def configs(settings: Settings) -> ClusterConfigs:
    return render(settings)


def as_dict(config: CasConfig) -> dict[str, Any]:
    parsed: dict[str, Any] = json5.loads(config.to_json())
    return parsed


def processes(configs: ClusterConfigs) -> dict[str, CasConfig]:
    return {"cas_server": configs.cas_server, "scheduler": configs.scheduler, "worker": configs.worker}


def test_each_config_parses_as_json5_and_round_trips_through_the_schema(configs: ClusterConfigs) -> None:
    for config in processes(configs).values():
        parsed = as_dict(config)
        assert CasConfig.model_validate(parsed) == config


def test_rendering_is_deterministic(settings: Settings) -> None:
    first = render(settings)
    second = render(stack_settings("dev"))
    for process, config in processes(first).items():
        assert config.to_json() == processes(second)[process].to_json()


def test_the_schema_refuses_keys_nativelink_does_not_know(configs: ClusterConfigs) -> None:
    parsed = as_dict(configs.worker)
    parsed["workers"][0]["local"]["work_dir"] = "/tmp/work"
    with pytest.raises(ValueError, match="work_dir"):
        CasConfig.model_validate(parsed)


def test_a_store_spec_sets_exactly_one_kind(configs: ClusterConfigs) -> None:
    parsed = as_dict(configs.cas_server)
    (verify,) = [store for store in parsed["stores"] if store["name"] == CAS_STORE]
    verify["memory"] = {}
    with pytest.raises(ValueError):
        CasConfig.model_validate(parsed)
    verify.pop("memory")
    verify["filesystem"] = {"content_path": "/x", "temp_path": "/y"}
    with pytest.raises(ValueError, match="exactly one kind"):
        CasConfig.model_validate(parsed)


def test_a_worker_property_is_either_values_or_query_cmd(configs: ClusterConfigs) -> None:
    parsed = as_dict(configs.worker)
    properties = parsed["workers"][0]["local"]["platform_properties"]
    properties["cpu_count"] = {"values": ["4"], "query_cmd": "nproc"}
    with pytest.raises(ValueError, match="exactly one kind"):
        CasConfig.model_validate(parsed)
    properties["cpu_count"] = {}
    with pytest.raises(ValueError, match="exactly one kind"):
        CasConfig.model_validate(parsed)


def test_the_cas_store_verifies_size_and_hash(configs: ClusterConfigs) -> None:
    # NativeLink defaults both to false, which would accept corrupt uploads without a word.
    cas = next(store for store in as_dict(configs.cas_server)["stores"] if store["name"] == CAS_STORE)
    assert (cas["verify"]["verify_size"], cas["verify"]["verify_hash"]) == (True, True)


def test_services_use_the_list_form_with_instance_names(configs: ClusterConfigs) -> None:
    # v1.6.6 still parses the old map forms (and bytestream's `cas_stores` map), but only with a warning.
    services = as_dict(configs.cas_server)["servers"][0]["services"]
    assert services["bytestream"] == [{"instance_name": "", "cas_store": CAS_STORE}]
    assert services["cas"] == [{"instance_name": "", "cas_store": CAS_STORE}]


def test_rendered_configs_keep_every_rule(configs: ClusterConfigs) -> None:
    assert check_configs(processes(configs), process_filesystems(configs.cas_data)) == []


@pytest.mark.parametrize("cas_data", [layout.CSI_CAS_DATA, layout.DOCKER_CAS_DATA], ids=["csi", "docker"])
def test_cas_server_is_the_only_process_on_juicefs(settings: Settings, cas_data: layout.CasData) -> None:
    configs = render(settings, cas_data)
    assert check_configs(processes(configs), process_filesystems(cas_data)) == []
    cas_paths = {spec.content_path for spec in filesystem_stores(configs.cas_server)}
    assert cas_paths == {cas_data.cas.content_path, cas_data.ac.content_path}
    assert all(path.startswith(cas_data.filesystem + "/") for path in cas_paths)
    for process in (configs.scheduler, configs.worker):
        for spec in filesystem_stores(process):
            assert not spec.content_path.startswith(cas_data.filesystem)
            assert not spec.temp_path.startswith(cas_data.filesystem)


def test_juicefs_backed_stores_are_top_level_so_status_checks_them(configs: ClusterConfigs) -> None:
    """NativeLink registers health checks only for top-level stores; a nested filesystem store has none."""
    stores = {store["name"]: store for store in as_dict(configs.cas_server)["stores"]}
    assert stores[CAS_FILES_STORE]["filesystem"]["content_path"] == configs.cas_data.cas.content_path
    assert stores[AC_FILES_STORE]["filesystem"]["content_path"] == configs.cas_data.ac.content_path
    assert stores[CAS_STORE]["verify"]["backend"] == {"ref_store": {"name": CAS_FILES_STORE}}
    assert stores[AC_STORE]["completeness_checking"]["backend"] == {"ref_store": {"name": AC_FILES_STORE}}
    top_level = {name for name, store in stores.items() if "filesystem" in store}
    assert top_level == {CAS_FILES_STORE, AC_FILES_STORE}


def test_cas_and_ac_live_apart_with_temp_beside_content(configs: ClusterConfigs) -> None:
    specs = filesystem_stores(configs.cas_server)
    assert len({spec.content_path for spec in specs}) == 2
    for spec in specs:
        assert spec.temp_path.rsplit("/", 1)[0] == spec.content_path.rsplit("/", 1)[0]


def test_worker_keeps_a_local_fast_store_beside_its_work_directory(configs: ClusterConfigs) -> None:
    worker = as_dict(configs.worker)
    local = worker["workers"][0]["local"]
    assert local["work_directory"] == f"{layout.WORKER_ROOT}/work"
    fast_slow = next(store for store in worker["stores"] if store["name"] == WORKER_FAST_SLOW_STORE)["fast_slow"]
    assert fast_slow["fast"]["filesystem"]["content_path"].startswith(layout.WORKER_ROOT + "/")
    assert fast_slow["slow"] == {"ref_store": {"name": REMOTE_CAS_STORE}}
    assert fast_slow["fast_direction"] == "get"
    assert fast_slow["fast"]["filesystem"]["eviction_policy"]["max_bytes"] == 10 * 1000**3


def test_workers_and_scheduler_reach_the_cas_over_grpc(configs: ClusterConfigs) -> None:
    """Workers write results, on the CAS server's listener for workers; the scheduler reads, as clients do."""
    for process, port in ((configs.scheduler, layout.CAS_PORT), (configs.worker, layout.WORKER_CAS_PORT)):
        grpc_stores = [store for store in as_dict(process)["stores"] if "grpc" in store]
        assert {store["grpc"]["store_type"] for store in grpc_stores} == {"cas", "ac"}
        for store in grpc_stores:
            assert store["grpc"]["endpoints"] == [{"address": f"grpc://nativelink-cas:{port}"}]


def ac_read_only(config: CasConfig) -> dict[str, bool]:
    """Each listener's action cache: read-only or not."""
    return {
        server["name"]: server["services"]["ac"][0]["read_only"]
        for server in as_dict(config)["servers"]
        if "ac" in server["services"]
    }


def test_only_workers_write_the_action_cache(configs: ClusterConfigs) -> None:
    """A client that could write the AC could make every later build use its outputs."""
    assert ac_read_only(configs.cas_server) == {"public": True, "workers": False}
    assert ac_read_only(configs.scheduler) == {"public": True}
    opened = render(stack_settings("dev", nativelink={"clientsUploadResults": True}))
    assert ac_read_only(opened.cas_server) == {"public": False, "workers": False}
    assert ac_read_only(opened.scheduler) == {"public": False}


def test_worker_advertises_and_runs_what_its_cpu_limit_allows(configs: ClusterConfigs) -> None:
    """`nproc` counts the host's CPUs whatever the container's limit, and 0 in-flight tasks means unlimited."""
    local = as_dict(configs.worker)["workers"][0]["local"]
    assert local["platform_properties"]["cpu_count"] == {"values": [str(WORKER_CPUS)]}
    assert local["max_inflight_tasks"] == WORKER_CPUS
    fixed = render(stack_settings("dev", workers={"maxInflightTasks": 1}))
    assert as_dict(fixed.worker)["workers"][0]["local"]["max_inflight_tasks"] == 1


def test_admin_listens_on_the_scheduler_loopback_only(configs: ClusterConfigs) -> None:
    """Build actions share a network with the scheduler; its drain endpoint must not be theirs to call."""
    servers = {server["name"]: server for server in as_dict(configs.scheduler)["servers"]}
    assert servers["admin"]["listener"]["http"]["socket_address"] == f"127.0.0.1:{layout.ADMIN_PORT}"
    assert set(servers["admin"]["services"]) == {"admin"}
    assert "admin" not in servers["health"]["services"]


def test_worker_name_comes_from_the_environment(configs: ClusterConfigs) -> None:
    local = as_dict(configs.worker)["workers"][0]["local"]
    assert local["name"] == "${WORKER_NAME}"
    assert local["worker_api_endpoint"]["uri"] == f"grpc://nativelink-scheduler:{layout.WORKER_API_PORT}"


def listeners(config: CasConfig) -> dict[int, set[str]]:
    served: dict[int, set[str]] = {}
    for server in as_dict(config)["servers"]:
        port = int(server["listener"]["http"]["socket_address"].rsplit(":", 1)[1])
        served[port] = set(server["services"])
    return served


def test_listeners_carry_the_services_the_deployment_relies_on(configs: ClusterConfigs) -> None:
    assert listeners(configs.cas_server) == {
        layout.CAS_PORT: {"cas", "ac", "capabilities", "bytestream"},
        layout.WORKER_CAS_PORT: {"cas", "ac", "capabilities", "bytestream"},
        layout.HEALTH_PORT: {"health"},
    }
    assert listeners(configs.scheduler) == {
        layout.SCHEDULER_PORT: {"ac", "execution", "capabilities"},
        layout.WORKER_API_PORT: {"worker_api"},
        layout.HEALTH_PORT: {"health"},
        layout.ADMIN_PORT: {"admin"},
    }
    assert listeners(configs.worker) == {layout.HEALTH_PORT: {"health"}}


def test_health_answers_on_status(configs: ClusterConfigs) -> None:
    for config in processes(configs).values():
        health = [server for server in as_dict(config)["servers"] if "health" in server["services"]]
        assert [server["services"]["health"] for server in health] == [{"path": "/status"}]


def test_scheduler_advertises_remote_execution(configs: ClusterConfigs) -> None:
    public = next(server for server in as_dict(configs.scheduler)["servers"] if server["name"] == "public")
    assert public["services"]["capabilities"] == [{"instance_name": "", "remote_execution": {"scheduler": SCHEDULER}}]


def test_ac_entries_are_checked_against_the_cas(configs: ClusterConfigs) -> None:
    ac = next(store for store in as_dict(configs.cas_server)["stores"] if store["name"] == AC_STORE)
    assert ac["completeness_checking"]["cas_store"] == {"ref_store": {"name": CAS_STORE}}


def test_platform_properties_reach_worker_and_scheduler() -> None:
    settings = stack_settings("dev", workers={"platformProperties": {"ISA": ["x86-64"]}})
    configs = render(settings)
    local = as_dict(configs.worker)["workers"][0]["local"]
    assert local["platform_properties"] == {"ISA": {"values": ["x86-64"]}, "cpu_count": {"values": ["4"]}}
    supported = as_dict(configs.scheduler)["schedulers"][0]["simple"]["supported_platform_properties"]
    assert supported == {"ISA": "exact", "cpu_count": "minimum"}


def test_instance_name_is_used_everywhere() -> None:
    settings = stack_settings("dev", nativelink={"instanceName": "main"})
    configs = render(settings)
    text = "".join(config.to_json() for config in processes(configs).values())
    assert '"instance_name": ""' not in text
    assert text.count('"instance_name": "main"') >= 8


# ---- the rules catch broken layouts


def broken(configs: ClusterConfigs, process: str, edit: Any) -> dict[str, CasConfig]:
    parsed = as_dict(processes(configs)[process])
    edit(parsed)
    return processes(configs) | {process: CasConfig.model_validate(parsed)}


def _worker_local(parsed: dict[str, Any]) -> dict[str, Any]:
    local: dict[str, Any] = parsed["workers"][0]["local"]
    return local


def _fast_store(parsed: dict[str, Any]) -> dict[str, Any]:
    store = next(store for store in parsed["stores"] if store["name"] == WORKER_FAST_SLOW_STORE)
    filesystem: dict[str, Any] = store["fast_slow"]["fast"]["filesystem"]
    return filesystem


BROKEN_LAYOUTS = [
    ("worker", lambda c: _worker_local(c).update(work_directory="/tmp/work"), "work_directory /tmp/work"),
    ("worker", lambda c: _fast_store(c).update(temp_path="/tmp/cas-temp"), "different filesystems"),
    (
        "worker",
        lambda c: _fast_store(c).update(content_path="/data/jfs/cas/content", temp_path="/data/jfs/cas/tmp"),
        "both use /data/jfs/cas/content",
    ),
    ("worker", lambda c: _worker_local(c).update(cas_fast_slow_store="MISSING"), "'MISSING', which is not defined"),
    ("worker", lambda c: _worker_local(c).pop("upload_action_result"), "upload_action_result has no ac_store"),
    ("cas_server", lambda c: c["servers"].pop(), "no listener serves ['health']"),
    (
        "scheduler",
        lambda c: c["servers"][1]["services"].update(health={"path": "/status"}),
        "serves worker_api beside other services",
    ),
    (
        "scheduler",
        lambda c: c["servers"][0]["services"]["execution"][0].update(scheduler="OTHER"),
        "scheduler 'OTHER', which is not defined",
    ),
    (
        "cas_server",
        lambda c: c["stores"][1]["filesystem"].update(content_path="/data/jfs/cas/content"),
        "used by two stores",
    ),
    (
        "cas_server",
        lambda c: c["stores"][0]["filesystem"].update(content_path="/var/cache/cas", temp_path="/var/cache/tmp"),
        "on no volume",
    ),
]


@pytest.mark.parametrize("process, edit, problem", BROKEN_LAYOUTS, ids=[p for _, _, p in BROKEN_LAYOUTS])
def test_rules_report_a_broken_layout(configs: ClusterConfigs, process: str, edit: Any, problem: str) -> None:
    problems = check_configs(broken(configs, process, edit), process_filesystems(configs.cas_data))
    assert any(problem in line for line in problems), json.dumps(problems, indent=1)
