"""Administrative runs against the JuiceFS volume, in the CSI namespace beside its mount pods.

* `forget-stored-keys`: a Job, run once per stack (and again whenever its spec changes), after the
  CAS server has rolled: it empties object-store keys an earlier release stored in the volume, which
  would otherwise win over the identity the mount pods run with (components.juicefs.commands). Every
  client reloads the volume's settings within seconds (juicefs pkg/meta/base.go), so it must run only
  once the CAS server's mount pod holds the new credentials; until then the stored key still works
  (Pulumi deletes the IAM user's key last).
* `metadata-dump`: a CronJob that dumps the metadata and copies the dump into the bucket, which S3
  replicates to the second region (components.juicefs.backup).
Both take the metadata URL and password (and, on the IAM-user path, the key) from a Secret of their
own, run the pinned JuiceFS client, and reach S3 as the mount pods do (IRSA service account or key).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pulumi
import pulumi_kubernetes as k8s

from components.aws.juicefs_access import MOUNT_SERVICE_ACCOUNT
from components.juicefs.backup import DUMP_DIR, META_URL_ENV, dump_script, s3_dump_destination
from components.juicefs.commands import SecretEnv, forget_stored_keys_script
from components.kubernetes.juicefs_volume import files_secret_name, object_store_key_env
from components.kubernetes.pods import UNPRIVILEGED_UID, labels, scratch_volume

if TYPE_CHECKING:
    from components.interfaces import MetadataEngine, ObjectStore
    from components.kubernetes.juicefs_volume import MountPodFiles
    from components.settings import ProdSettings

# Six hours for a dump of a very large CAS; a run still going then is stopped and retried next time.
DUMP_DEADLINE_S = 6 * 3600
KEEP_FINISHED_JOBS_S = 7 * 86400


def admin_env(metadata: MetadataEngine, store: ObjectStore) -> dict[str, pulumi.Input[str]]:
    """What the admin runs need: metadata URL and password, and the key where there is one."""
    return {
        META_URL_ENV: metadata.meta_url,
        SecretEnv.META_PASSWORD: metadata.meta_password,
        **object_store_key_env(store),
    }


class JuiceFsAdmin(pulumi.ComponentResource):
    """The stored-keys cleanup and the scheduled metadata dump of one JuiceFS volume."""

    def __init__(
        self,
        name: str,
        settings: ProdSettings,
        metadata: MetadataEngine,
        store: ObjectStore,
        block_storage: pulumi.Resource,
        irsa: bool,
        after: Sequence[pulumi.Resource],
        mount_files: Sequence[MountPodFiles] = (),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("nativelink:juicefs:Admin", name, None, opts)
        self._name = name
        self._settings = settings
        self._irsa = irsa
        self._mount_files = mount_files
        kube = settings.kubernetes
        secret = k8s.core.v1.Secret(
            f"{name}-secret",
            metadata={"name": f"{kube.storage_class_name}-admin", "namespace": kube.csi_namespace},
            type="Opaque",
            string_data={key: pulumi.Output.secret(value) for key, value in admin_env(metadata, store).items()},
            opts=pulumi.ResourceOptions(parent=self),
        )
        self._secret_name = secret.metadata.name
        # `after`: the rolled CAS server, and what the pods use (service account, role policy, CA files).
        ready = [secret, *after]

        k8s.batch.v1.Job(
            f"{name}-forget-stored-keys",
            metadata={"namespace": kube.csi_namespace, "labels": labels("juicefs-admin")},
            # Kept once finished (no TTL): a Job that vanished would read as one to create on every refresh.
            spec={"backoff_limit": 3, "template": self._pod_template(forget_stored_keys_script(), [])},
            opts=pulumi.ResourceOptions(parent=self, depends_on=ready),
        )

        destination = s3_dump_destination(settings.juicefs.bucket_name, settings.aws.region)
        self._metadata_dump(destination, [*ready, block_storage])
        self.register_outputs({})

    def _pod_template(self, script: str, volumes: list[Any], volume_mounts: list[Any] | None = None) -> Any:
        files_volumes = [
            {
                "name": files.name,
                "secret": {"secret_name": files_secret_name(self._settings, files)},
            }
            for files in self._mount_files
        ]
        files_mounts = [
            {"name": files.name, "mount_path": files.mount_dir, "read_only": True} for files in self._mount_files
        ]
        tmp_volume, tmp_mount = scratch_volume()
        return {
            "metadata": {"labels": labels("juicefs-admin")},
            "spec": {
                "restart_policy": "Never",
                **({"service_account_name": MOUNT_SERVICE_ACCOUNT} if self._irsa else {}),
                # Nothing here talks to the Kubernetes API (the IRSA webhook projects its own token).
                "automount_service_account_token": False,
                # The client needs no privilege: it reads its secrets from the environment and writes only
                # the dump (a real run as this user: tests/realtools/test_metadata_backup.py).
                "security_context": {
                    "seccomp_profile": {"type": "RuntimeDefault"},
                    "run_as_non_root": True,
                    "run_as_user": UNPRIVILEGED_UID,
                    "run_as_group": UNPRIVILEGED_UID,
                    # The dump volume, and the IRSA token, readable and writable by that user.
                    "fs_group": UNPRIVILEGED_UID,
                    "fs_group_change_policy": "OnRootMismatch",
                },
                "containers": [
                    {
                        "name": "juicefs",
                        "image": self._settings.versions.juicefs,
                        "command": ["/bin/sh", "-c", script],
                        "env_from": [{"secret_ref": {"name": self._secret_name}}],
                        "env": [{"name": "HOME", "value": "/tmp"}],
                        "volume_mounts": [*files_mounts, tmp_mount, *(volume_mounts or [])],
                        "security_context": {
                            "allow_privilege_escalation": False,
                            "capabilities": {"drop": ["ALL"]},
                            "read_only_root_filesystem": True,
                        },
                        "resources": {
                            "requests": {"cpu": "250m", "memory": "512Mi"},
                            "limits": {"cpu": "2", "memory": "4Gi"},
                        },
                    }
                ],
                "volumes": [*files_volumes, tmp_volume, *volumes],
            },
        }

    def _metadata_dump(self, destination: str, depends_on: list[pulumi.Resource]) -> None:
        kube = self._settings.kubernetes
        # The dump is written to a volume of its own, created and deleted with the job's pod.
        dump_volume = {
            "name": "dumps",
            "ephemeral": {
                "volume_claim_template": {
                    "metadata": {"labels": labels("juicefs-admin")},
                    "spec": {
                        "access_modes": ["ReadWriteOnce"],
                        "storage_class_name": kube.block_storage_class,
                        "resources": {"requests": {"storage": kube.metadata_dump_volume_size}},
                    },
                }
            },
        }
        script = dump_script(destination, keep_key=self._settings.juicefs.metadata_dump_keeps_key)
        template = self._pod_template(script, [dump_volume], [{"name": "dumps", "mount_path": DUMP_DIR}])
        k8s.batch.v1.CronJob(
            f"{self._name}-metadata-dump",
            metadata={"namespace": kube.csi_namespace, "labels": labels("juicefs-admin")},
            spec={
                "schedule": self._settings.juicefs.metadata_dump_schedule,
                "time_zone": "Etc/UTC",
                # One at a time; a missed run is started late rather than skipped, within the day.
                "concurrency_policy": "Forbid",
                "starting_deadline_seconds": 86400 - 3600,
                "successful_jobs_history_limit": 3,
                "failed_jobs_history_limit": 3,
                "job_template": {
                    # Jobs take their labels from here, not from the CronJob.
                    "metadata": {"labels": labels("juicefs-admin")},
                    "spec": {
                        "backoff_limit": 2,
                        "active_deadline_seconds": DUMP_DEADLINE_S,
                        "ttl_seconds_after_finished": KEEP_FINISHED_JOBS_S,
                        "template": template,
                    },
                },
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=depends_on),
        )
