"""Turn a ``docker.Container``'s recorded inputs (wire names, as ``RecordingMocks`` keeps them) into ``docker run``.

The translation is mechanical, key by key, so a test replays what the program declares instead
of a copy typed by hand. A few things are swapped on purpose (``Swaps``): the image, the
network, the host directory behind bind mounts, and literal strings in the command and env
(addresses of the real servers, their secrets). An input it does not know is an error, so a
new container option cannot slip past the replay unnoticed.

Env values are not put on the ``docker`` command line: the options carry ``--env NAME`` and
the values go in ``RunSpec.env``, which the docker CLI reads them from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Inputs the Pulumi provider acts on itself; `docker run` has no option for them.
PROVIDER_ONLY = frozenset({"wait", "waitTimeout", "mustRun", "destroyGraceSeconds", "attach"})


@dataclass(frozen=True)
class Swaps:
    image: str
    network: str
    # Recorded host directory -> the one to use instead; applies to bind sources under it too.
    host_dir: tuple[str, str]
    # Recorded literal -> replacement, in the command, the env values and the healthcheck.
    strings: Mapping[str, str] = field(default_factory=dict)

    def text(self, value: str) -> str:
        for old, new in self.strings.items():
            value = value.replace(old, new)
        return value

    def path(self, source: str) -> str:
        old, new = self.host_dir
        if source == old or source.startswith(old + "/"):
            return new + source[len(old) :]
        return source


@dataclass(frozen=True)
class RunSpec:
    options: list[str]
    image: str
    command: list[str]
    env: dict[str, str]
    # The recorded PROVIDER_ONLY inputs, for the caller to emulate.
    provider: dict[str, Any]

    def argv(self) -> list[str]:
        """Arguments for ``docker run`` (detached)."""
        return ["run", "--detach", *self.options, self.image, *self.command]


def _duration(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a duration string such as '5s', got {value!r}")
    return value


def mount_options(mounts: Sequence[Mapping[str, Any]], swaps: Swaps) -> list[str]:
    """``--mount`` options for recorded ``mounts``; bind sources go through ``swaps.path``."""
    options: list[str] = []
    for mount in mounts:
        unknown = set(mount) - {"type", "source", "target", "readOnly", "bindOptions"}
        if unknown:
            raise ValueError(f"cannot replay mount keys {sorted(unknown)} of {mount!r}")
        kind = mount["type"]
        if kind not in ("bind", "volume"):
            raise ValueError(f"cannot replay a {kind!r} mount")
        source = swaps.path(mount["source"]) if kind == "bind" else mount["source"]
        fields = [f"type={kind}", f"source={source}", f"target={mount['target']}"]
        if mount.get("readOnly"):
            fields.append("readonly")
        bind_options = dict(mount.get("bindOptions") or {})
        if kind != "bind" and bind_options:
            raise ValueError(f"bindOptions on a {kind} mount: {mount!r}")
        propagation = bind_options.pop("propagation", None)
        if bind_options:
            raise ValueError(f"cannot replay bind options {sorted(bind_options)}")
        if propagation is not None:
            fields.append(f"bind-propagation={propagation}")
        options += ["--mount", ",".join(fields)]
    return options


def run_spec(inputs: Mapping[str, Any], swaps: Swaps) -> RunSpec:
    """``docker run`` for a container's recorded inputs, secrets already revealed."""
    options: list[str] = []
    env: dict[str, str] = {}
    command: list[str] = []
    provider: dict[str, Any] = {}
    for key, value in inputs.items():
        if key in PROVIDER_ONLY:
            provider[key] = value
        elif key == "image":
            pass  # swapped
        elif key in ("networksAdvanced", "networkMode"):
            pass  # swapped: the private daemon has no bridge, and the real servers are on loopback
        elif key == "name":
            options += ["--name", value]
        elif key == "command":
            command = [swaps.text(word) for word in value]
        elif key == "envs":
            for entry in value:
                name, _, recorded = entry.partition("=")
                env[name] = swaps.text(recorded)
                options += ["--env", name]
        elif key == "capabilities":
            unknown = set(value) - {"adds", "drops"}
            if unknown:
                raise ValueError(f"cannot replay capabilities {sorted(unknown)}")
            options += [opt for cap in value.get("adds", []) for opt in ("--cap-add", cap)]
            options += [opt for cap in value.get("drops", []) for opt in ("--cap-drop", cap)]
        elif key == "devices":
            for device in value:
                unknown = set(device) - {"hostPath", "containerPath", "permissions"}
                if unknown:
                    raise ValueError(f"cannot replay device keys {sorted(unknown)}")
                parts = [device["hostPath"], device.get("containerPath", device["hostPath"])]
                if "permissions" in device:
                    parts.append(device["permissions"])
                options += ["--device", ":".join(parts)]
        elif key == "securityOpts":
            options += [opt for item in value for opt in ("--security-opt", item)]
        elif key == "mounts":
            options += mount_options(value, swaps)
        elif key == "ports":
            for port in value:
                unknown = set(port) - {"internal", "external", "ip", "protocol"}
                if unknown:
                    raise ValueError(f"cannot replay port keys {sorted(unknown)}")
                published = f"{port.get('ip', '')}:{int(port['external'])}:{int(port['internal'])}".lstrip(":")
                options += ["--publish", f"{published}/{port.get('protocol', 'tcp')}"]
        elif key == "volumes":
            for volume in value:
                unknown = set(volume) - {"hostPath", "containerPath"}
                if unknown:
                    raise ValueError(f"cannot replay volume keys {sorted(unknown)}")
                options += ["--volume", f"{swaps.path(volume['hostPath'])}:{volume['containerPath']}"]
        elif key == "healthcheck":
            options += _healthcheck_options({**value, "tests": [swaps.text(word) for word in value["tests"]]})
        elif key == "restart":
            options += ["--restart", value]
        elif key == "stopSignal":
            options += ["--stop-signal", value]
        elif key == "stopTimeout":
            options += ["--stop-timeout", str(int(value))]
        elif key == "logDriver":
            options += ["--log-driver", value]
        elif key == "logOpts":
            options += [opt for name, setting in sorted(value.items()) for opt in ("--log-opt", f"{name}={setting}")]
        elif key == "init":
            options += ["--init"] if value else []
        elif key == "cpus":
            options += ["--cpus", value]
        elif key == "memory":
            options += ["--memory", f"{int(value)}m"]
        else:
            raise ValueError(f"cannot replay container input {key!r}")
    options += ["--network", swaps.network]
    return RunSpec(options=options, image=swaps.image, command=command, env=env, provider=provider)


def _healthcheck_options(healthcheck: Mapping[str, Any]) -> list[str]:
    unknown = set(healthcheck) - {"tests", "interval", "timeout", "startPeriod", "retries"}
    if unknown:
        raise ValueError(f"cannot replay healthcheck keys {sorted(unknown)}")
    test = healthcheck["tests"]
    # `docker run --health-cmd` always makes a CMD-SHELL test.
    if len(test) != 2 or test[0] != "CMD-SHELL":
        raise ValueError(f"only a CMD-SHELL healthcheck can be replayed with docker run: {test!r}")
    options = ["--health-cmd", test[1]]
    for name, flag in (("interval", "--health-interval"), ("timeout", "--health-timeout")):
        if name in healthcheck:
            options += [flag, _duration(healthcheck[name])]
    if "startPeriod" in healthcheck:
        options += ["--health-start-period", _duration(healthcheck["startPeriod"])]
    if "retries" in healthcheck:
        options += ["--health-retries", str(int(healthcheck["retries"]))]
    return options
