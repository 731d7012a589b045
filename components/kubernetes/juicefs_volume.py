"""The JuiceFS volume on Kubernetes: CSI driver, credentials Secret, StorageClass and the CAS claim.

Formatting happens in the CSI mount pod: before every mount the driver runs `juicefs format` with
the Secret's settings, which creates the volume the first time and is a no-op (or updates only
mutable settings) afterwards. Nothing mounts until that succeeded.

Encryption key (juicefs.encrypt):
* `juicefsRsaKey` supplied: it must be a passphrase-protected PEM (`openssl genrsa -aes256 ...`)
  and `juicefsPassphrase` must be set; the mount pods get JFS_RSA_PASSPHRASE. JuiceFS copies the
  still-encrypted PEM into the metadata engine, so reading the metadata alone cannot decrypt data.
* not supplied: the program generates an RSA-2048 key and protects it with `juicefsPassphrase`, or
  with a generated passphrase (components.juicefs.encryption_key); the same holds.
The key chosen at the first format is permanent; JuiceFS ignores a different key later, so a volume
first formatted with an unprotected key (releases before this one) keeps it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pulumi
import pulumi_kubernetes as k8s

from components.aws.juicefs_access import CSI_NODE_SERVICE_ACCOUNT, MOUNT_SERVICE_ACCOUNT
from components.juicefs.commands import CREDENTIAL_ENVS, SecretEnv
from components.juicefs.encryption_key import GeneratedKey, generate_protected_key
from components.settings import ConfigError, JuiceFsSettings, ProdSettings, size_bytes

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from components.interfaces import MetadataEngine, ObjectStore
    from components.stack import StackSecrets

CSI_DRIVER = "csi.juicefs.com"
CSI_CHART = "juicefs-csi-driver"
CSI_CHART_REPO = "https://juicedata.github.io/charts/"
CSI_RELEASE = "juicefs-csi-driver"
CLAIM_NAME = "nativelink-cas"
IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"
# JuiceFS stops caching when less than this share of the cache volume is free.
CACHE_FREE_SPACE_RATIO = 0.1
# ext4's reserved blocks and metadata on the cache volume.
CACHE_FS_OVERHEAD = 1.1


@dataclass(frozen=True)
class MountPodFiles:
    """Files the mount pod needs (e.g. a CA bundle), shipped as a Secret through the CSI `configs` key."""

    name: str
    mount_dir: str
    files: Mapping[str, str] = field(default_factory=dict)


def check_encryption_secrets(settings: ProdSettings, secrets: StackSecrets) -> None:
    """Refuse key/passphrase combinations that would fail at format time or protect nothing."""
    if not settings.juicefs.encrypt:
        return
    if secrets.juicefs_rsa_key is not None and secrets.juicefs_passphrase is None:
        raise ConfigError(
            "nativelink-juicefs:juicefsPassphrase: missing; a supplied juicefsRsaKey must be "
            "passphrase-protected, set the passphrase with `pulumi config set --secret juicefsPassphrase`"
        )


def _require_encrypted_pem(pem: str) -> str:
    # Checked on the value only; the message never quotes it.
    if "ENCRYPTED" not in pem:
        raise ConfigError(
            "nativelink-juicefs:juicefsRsaKey: not a passphrase-protected PEM (JuiceFS would ignore the "
            "passphrase); create one with `openssl genrsa -aes256 -out key.pem 2048`"
        )
    return pem


def format_options(settings: JuiceFsSettings) -> str:
    """The CSI Secret's `format-options`: what `juicefs format` gets besides storage and bucket."""
    options = [
        f"trash-days={settings.trash_days}",
        f"block-size={settings.block_size_kib}",
        f"compress={settings.compress}",
    ]
    if settings.encrypt:
        options.append(f"encrypt-algo={settings.encrypt_algo}")
    return ",".join(options)


def mount_options(settings: JuiceFsSettings) -> list[str]:
    """Options of every mount pod, from the driver's global patch: unlike a StorageClass's mount options,
    which the provisioner copies into a PV once, a change reaches the existing volume at its next mount
    (patch options replace the PV's key by key: csi-driver pkg/config/setting.go applyConfigPatch)."""
    return [
        f"cache-size={size_bytes(settings.cache_size) // 2**20}",
        # The cache has a volume of its own (cache_volume_size); this keeps it from filling that volume.
        f"free-space-ratio={CACHE_FREE_SPACE_RATIO}",
        "no-usage-report",
    ]


def cache_volume_size(settings: JuiceFsSettings) -> str:
    """The mount pod's cache volume: cache-size, plus the free share JuiceFS keeps and filesystem overhead."""
    needed = size_bytes(settings.cache_size) / (1 - CACHE_FREE_SPACE_RATIO) * CACHE_FS_OVERHEAD
    return f"{math.ceil(needed / 2**30)}Gi"


def object_store_key_env(store: ObjectStore) -> dict[str, pulumi.Input[str]]:
    """The object-store key as the client's standard variables (CREDENTIAL_ENVS); none on the IRSA path."""
    if store.access_key is None or store.secret_key is None:
        return {}
    access, secret = CREDENTIAL_ENVS["s3"]
    return {access: store.access_key, secret: store.secret_key}


def files_secret_name(settings: ProdSettings, files: MountPodFiles) -> str:
    return f"{settings.kubernetes.storage_class_name}-credentials-{files.name}"


def csi_chart_values(
    settings: ProdSettings, mount_files: Sequence[MountPodFiles] = (), mount_role_arn: pulumi.Input[str] | None = None
) -> dict[str, object]:
    # The node plugin and the controller run `juicefs` against the metaurl themselves (the volume's UUID
    # at NodePublish, `quota set` at provisioning and expansion: csi-driver pkg/config/command.go
    # GetJfsVolUUID, pkg/juicefs/juicefs.go SetQuota), so files the metaurl names must reach them too.
    extra = {
        "extraVolumes": [
            {"name": files.name, "secret": {"secretName": files_secret_name(settings, files)}} for files in mount_files
        ],
        "extraVolumeMounts": [
            {"name": files.name, "mountPath": files.mount_dir, "readOnly": True} for files in mount_files
        ],
    }
    # A volume of its own per mount pod (a generic ephemeral volume, csi-driver pkg/config/setting.go
    # GenCacheDirs), so the cache never competes with pods for the node's disk or triggers its
    # disk-pressure evictions; it is deleted with the mount pod, as a cache may be.
    cache_dir = {
        "type": "Ephemeral",
        "storage": cache_volume_size(settings.juicefs),
        "storageClassName": settings.kubernetes.block_storage_class,
    }
    return {
        "mountMode": "mountpod",
        "defaultMountImage": {"ce": settings.versions.juicefs},
        # The driver's ConfigMap outranks the image a PV recorded when it was provisioned, so a new
        # versions.juicefs reaches the CAS volume too. (Not a StorageClass parameter: the provisioner
        # copies those into the PV once, which would pin the volume to its first client for good.)
        "globalConfig": {
            "enabled": True,
            "mountPodPatch": [
                {
                    "ceMountImage": settings.versions.juicefs,
                    "cacheDirs": [cache_dir],
                    "mountOptions": mount_options(settings.juicefs),
                }
            ],
        },
        # StorageClasses and Secrets stay out of Helm values, where credentials would be stored.
        "storageClasses": [],
        "dashboard": {"enabled": False},
        "controller": {"leaderElection": {"enabled": True}, **extra},
        "node": extra,
        # Mount pods of a volume provisioned without IRSA run as the node plugin's account.
        "serviceAccount": {
            "node": {
                "name": CSI_NODE_SERVICE_ACCOUNT,
                **({"annotations": {IRSA_ANNOTATION: mount_role_arn}} if mount_role_arn is not None else {}),
            }
        },
    }


class CsiJuiceFsVolume(pulumi.ComponentResource):
    """JuiceFS through its CSI driver, and a ReadWriteMany claim for the CAS server (JuiceFsVolume)."""

    volume_name: pulumi.Output[str]
    storage_class_name: pulumi.Output[str]
    claim_name: pulumi.Output[str]
    secret_name: pulumi.Output[str]
    # The generated key and passphrase (secrets), exported for restoring JuiceFS's encrypted backups;
    # None if supplied or off.
    generated_key: GeneratedKey | None

    def __init__(
        self,
        name: str,
        settings: ProdSettings,
        secrets: StackSecrets,
        metadata: MetadataEngine,
        store: ObjectStore,
        namespace: k8s.core.v1.Namespace,
        block_storage: pulumi.Resource,
        mount_role_arn: pulumi.Output[str] | None = None,
        mount_files: Sequence[MountPodFiles] = (),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("nativelink:juicefs:CsiVolume", name, None, opts)
        check_encryption_secrets(settings, secrets)
        kube = settings.kubernetes
        csi_namespace = kube.csi_namespace
        child = pulumi.ResourceOptions(parent=self)

        secret_name = f"{kube.storage_class_name}-credentials"
        configs: dict[str, str] = {}
        files_secrets: list[pulumi.Resource] = []
        for files in mount_files:
            # Mount pods and the driver's pods run in the CSI namespace and mount Secrets from there only.
            files_secrets.append(
                k8s.core.v1.Secret(
                    f"{name}-{files.name}",
                    metadata={"name": files_secret_name(settings, files), "namespace": csi_namespace},
                    string_data=dict(files.files),
                    opts=child,
                )
            )
            configs[files_secret_name(settings, files)] = files.mount_dir

        release = k8s.helm.v3.Release(
            f"{name}-csi-driver",
            name=CSI_RELEASE,
            chart=CSI_CHART,
            version=settings.versions.juicefs_csi_chart,
            repository_opts={"repo": CSI_CHART_REPO},
            namespace=csi_namespace,
            values=csi_chart_values(settings, mount_files, mount_role_arn),
            atomic=True,
            cleanup_on_fail=True,
            max_history=10,
            # The driver's pods mount these; without them they never start and the release fails.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*files_secrets, block_storage]),
        )

        # The StorageClass and the claim name what they use as plain strings and wait for it through
        # depends_on. The Secret is replaced whenever its data changes and the StorageClass whenever its
        # parameters do (fixed names: the old one goes first), and the engine would then also replace
        # every resource with an input computed from them, the protected claim holding the CAS included.
        parameters: dict[str, pulumi.Input[str]] = {}
        uses: list[pulumi.Resource] = [release]
        if mount_role_arn is not None:
            account = k8s.core.v1.ServiceAccount(
                f"{name}-mount-sa",
                metadata={
                    "name": MOUNT_SERVICE_ACCOUNT,
                    "namespace": csi_namespace,
                    "annotations": {IRSA_ANNOTATION: mount_role_arn},
                },
                automount_service_account_token=False,
                opts=child,
            )
            parameters["juicefs/mount-service-account"] = MOUNT_SERVICE_ACCOUNT
            uses.append(account)
        # What a pod that runs the JuiceFS client in the CSI namespace needs to exist first.
        self.mount_pod_inputs: list[pulumi.Resource] = [*uses, *files_secrets]

        self.generated_key = None
        rsa_key: pulumi.Output[str] | None = None
        passphrase: pulumi.Output[str] | None = None
        if settings.juicefs.encrypt:
            if secrets.juicefs_rsa_key is not None:
                rsa_key = pulumi.Output.secret(secrets.juicefs_rsa_key.apply(_require_encrypted_pem))
                passphrase = secrets.juicefs_passphrase
            else:
                self.generated_key = generate_protected_key(name, self, secrets.juicefs_passphrase)
                rsa_key, passphrase = self.generated_key.protected_pem, self.generated_key.passphrase

        envs: dict[str, pulumi.Input[str]] = {SecretEnv.META_PASSWORD: metadata.meta_password}
        if passphrase is not None:
            envs[SecretEnv.RSA_PASSPHRASE] = passphrase
        # In the mount pod's environment, never `access-key`/`secret-key`: those the driver passes to
        # `juicefs format`, which stores them in the volume, where they would outlive the key.
        envs.update(object_store_key_env(store))
        data: dict[str, pulumi.Input[str]] = {
            "name": settings.juicefs.volume_name,
            "metaurl": metadata.meta_url,
            "storage": store.storage,
            "bucket": store.bucket_url,
            "envs": pulumi.Output.all(**envs).apply(
                lambda values: json.dumps({key: value for key, value in values.items() if value})
            ),
            "format-options": format_options(settings.juicefs),
        }
        if rsa_key is not None:
            data["encrypt_rsa_key"] = rsa_key
        if configs:
            data["configs"] = json.dumps(configs)
        # A Secret, never a ConfigMap; every value secret, so none reaches state or previews in clear.
        secret = k8s.core.v1.Secret(
            f"{name}-credentials",
            metadata={"name": secret_name, "namespace": csi_namespace},
            type="Opaque",
            string_data={key: pulumi.Output.secret(value) for key, value in data.items()},
            opts=child,
        )

        parameters.update(
            {
                "csi.storage.k8s.io/provisioner-secret-name": secret_name,
                "csi.storage.k8s.io/provisioner-secret-namespace": csi_namespace,
                "csi.storage.k8s.io/node-publish-secret-name": secret_name,
                "csi.storage.k8s.io/node-publish-secret-namespace": csi_namespace,
                # Expansion sets the new quota with the volume's credentials (controller.go ControllerExpandVolume).
                "csi.storage.k8s.io/controller-expand-secret-name": secret_name,
                "csi.storage.k8s.io/controller-expand-secret-namespace": csi_namespace,
            }
        )
        storage_class = k8s.storage.v1.StorageClass(
            f"{name}-storage-class",
            metadata={"name": kube.storage_class_name},
            provisioner=CSI_DRIVER,
            # Deleting the claim must never delete the CAS directory.
            reclaim_policy="Retain",
            volume_binding_mode="Immediate",
            allow_volume_expansion=True,
            parameters=parameters,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*uses, secret]),
        )
        claim = k8s.core.v1.PersistentVolumeClaim(
            f"{name}-claim",
            metadata={"name": CLAIM_NAME, "namespace": namespace.metadata.name},
            spec={
                "access_modes": ["ReadWriteMany"],
                "storage_class_name": kube.storage_class_name,
                "resources": {"requests": {"storage": kube.cas_volume_size}},
            },
            opts=pulumi.ResourceOptions(parent=self, protect=True, depends_on=[release, secret, storage_class]),
        )

        self.volume_name = pulumi.Output.from_input(settings.juicefs.volume_name)
        self.storage_class_name = storage_class.metadata.name
        self.claim_name = claim.metadata.name
        self.secret_name = secret.metadata.name
        self.register_outputs(
            {
                "volumeName": self.volume_name,
                "storageClassName": self.storage_class_name,
                "claimName": self.claim_name,
            }
        )
