"""What the dev stack needs from the Docker host, checked at the start of every `pulumi up`.

Each failed check says what to fix; all of them are reported at once, and `pulumi up` stops there,
before any resource is registered. A preview skips it: pull requests preview dev on other machines.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

import pulumi
import pulumi_command as command

from components.docker.common import docker_host

if TYPE_CHECKING:
    from components.settings import DockerSettings

# The script travels in the environment: a failed command's error quotes its command line first.
SCRIPT_ENV = "NATIVELINK_JUICEFS_PREFLIGHT"

# 28.0.0 stopped hosts on the LAN from reaching ports published on 127.0.0.1 by direct routing
# (moby/moby#45610); 28.3.3 closed the same hole reopened by a firewalld reload (CVE-2025-54388).
# Every port the dev stack publishes is unauthenticated and meant for this machine only.
MIN_DOCKER_VERSION = (28, 3, 3)

_AWK_SHARED = (
    # The mount holding $target: the longest mount point that is $target or one of its parents (the
    # last one listed wins when mounts are stacked). Shared if an optional field says `shared:N`.
    'awk -v t="$target" \'{ mp = $5; prefix = (mp == "/") ? "/" : mp "/"; '
    "if ((t == mp || index(t, prefix) == 1) && length(mp) >= best) { best = length(mp); shared = 0; "
    'for (i = 7; $i != "-"; i++) if ($i ~ /^shared:/) shared = 1 } } END { exit shared ? 0 : 1 }\' '
    "/proc/self/mountinfo"
)


def check_host(settings: DockerSettings) -> None:
    """Run the preflight where `pulumi up` runs (raises, failing the update, when a check fails)."""
    if pulumi.runtime.is_dry_run():
        return
    try:
        command.local.run(
            command=f'/bin/sh -c "${SCRIPT_ENV}"',
            environment={
                SCRIPT_ENV: preflight_script(settings.host_mount_dir, settings.worker_cpus),
                "DOCKER_HOST": docker_host(),
            },
        )
    except Exception as failed:
        # The invoke's error carries the script's own lines after the command line; show those alone.
        lines = [line for line in str(failed).splitlines() if line.startswith("preflight:")]
        raise pulumi.RunError("\n".join(lines) or str(failed)) from None


def preflight_script(host_mount_dir: str, worker_cpus: int) -> str:
    """POSIX shell, run on the machine running `pulumi up`, which must be the Docker host."""
    directory = shlex.quote(host_mount_dir)
    major, minor, patch = MIN_DOCKER_VERSION
    minimum = f"{major}.{minor}.{patch}"
    return "\n".join(
        [
            "set -u",
            "problems=0",
            'fail() { echo "preflight: $*" >&2; problems=$((problems + 1)); }',
            'case "${DOCKER_HOST:-unix://}" in unix://*) ;; *) fail "DOCKER_HOST=$DOCKER_HOST is another machine: '
            "the dev stack shares a FUSE mount through the Docker host's filesystem; run pulumi up there\";; esac",
            "[ -c /dev/fuse ] || fail \"/dev/fuse is missing: load the FUSE module ('sudo modprobe fuse') "
            "and make it load at boot ('echo fuse | sudo tee /etc/modules-load.d/fuse.conf')\"",
            "if version=$(docker version --format '{{.Server.Version}}' 2>/dev/null) && [ -n \"$version\" ]; then",
            "  case \"$(docker info --format '{{.OperatingSystem}}' 2>/dev/null)\" in *'Docker Desktop'*)",
            '    fail "Docker Desktop runs containers in a VM, which cannot share a FUSE mount between them: '
            'use Docker Engine on Linux";; esac',
            "  case \"$(docker info --format '{{.SecurityOptions}}' 2>/dev/null)\" in *rootless*)",
            '    fail "rootless Docker mounts in a namespace of its own, which cannot share a FUSE mount with this '
            'host: use the rootful engine";; esac',
            "  cpus=$(docker info --format '{{.NCPU}}' 2>/dev/null)",
            f'  if [ "${{cpus:-0}}" -lt {worker_cpus} ] 2>/dev/null; then',
            f'    fail "docker.workerCpus is {worker_cpus} but the engine has $cpus CPUs: '
            "lower it ('pulumi config set --path docker.workerCpus $cpus')\"",
            "  fi",
            "  major=${version%%.*}; rest=${version#*.}; minor=${rest%%.*}; patch=${rest#*.}; patch=${patch%%[!0-9]*}",
            '  case "$major.$minor.${patch:-0}" in *[!0-9.]*|.*|*..*)',
            "    fail \"cannot read the Docker Engine version '$version'\"; major=0; minor=0; patch=0;; esac",
            f'  if [ "$major" -lt {major} ] || {{ [ "$major" -eq {major} ] && {{ [ "$minor" -lt {minor} ] || '
            f'{{ [ "$minor" -eq {minor} ] && [ "${{patch:-0}}" -lt {patch} ]; }}; }}; }}; then',
            f'    fail "Docker Engine $version lets other hosts on the LAN reach ports published on 127.0.0.1: '
            f'upgrade to {minimum} or later (https://docs.docker.com/engine/install/)"',
            "  fi",
            "else",
            '  fail "cannot reach the Docker engine (docker version): start it, and let this user use it '
            '(https://docs.docker.com/engine/install/linux-postinstall/)"',
            "fi",
            # The host directory may not exist yet: its nearest existing parent decides.
            f"d={directory}",
            'while [ ! -e "$d" ]; do d=$(dirname "$d"); done',
            'target=$(cd "$d" && pwd -P)',
            f'{_AWK_SHARED} || fail "$target, which holds docker.hostMountDir {host_mount_dir}, is not on a shared '
            "mount, so the JuiceFS mount would never leave its container: run 'sudo mkdir -p "
            f"{host_mount_dir} && sudo mount --bind {host_mount_dir} {host_mount_dir} && sudo mount "
            f"--make-rshared {host_mount_dir}' (and add it to /etc/fstab to keep it across reboots)\"",
            'if [ "$problems" -gt 0 ]; then echo "preflight: $problems problem(s); no container was created" >&2; '
            "exit 1; fi",
        ]
    )
