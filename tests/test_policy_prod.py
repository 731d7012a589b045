"""The prod stack (AWS + Kubernetes) under mocks, built from the real Pulumi.prod.yaml, passes every policy."""

from __future__ import annotations

import nativelink_policies as pack
import pulumi
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from components.settings import ProdSettings
from components.stack import StackSecrets
from tests.mocks import RecordingMocks
from tests.policy_harness import messages, violations
from tests.stacks import build, stack_settings

PASSPHRASE = "test-juicefs-passphrase"
KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: test, user: {token: test-token}}]
contexts: [{name: test, context: {cluster: test, user: test}}]
current-context: test
"""


def prod_secrets() -> StackSecrets:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.BestAvailableEncryption(PASSPHRASE.encode()),
    ).decode()
    return StackSecrets(
        kubeconfig=pulumi.Output.secret(KUBECONFIG),
        juicefs_rsa_key=pulumi.Output.secret(pem),
        juicefs_passphrase=pulumi.Output.secret(PASSPHRASE),
    )


def assert_passes_and_was_checked(mocks: RecordingMocks, metadata_type: str) -> None:
    found = violations(pack.POLICIES, mocks)
    assert not found, messages(found)
    # Not a vacuous pass: what the policies look at is there.
    types = [record.typ for record in mocks.resources]
    assert any(typ in pack.BUCKET_TYPES for typ in types)
    assert metadata_type in types
    assert any(typ in pack.POD_SPEC_PATHS for typ in types)
    assert pack.K8S_SERVICE in types
    assert pack.K8S_CONFIG_MAP in types


ENGINE_TYPES = {"memorydb": pack.MEMORYDB_CLUSTER, "redis": pack.REPLICATION_GROUP, "postgres": pack.RDS_INSTANCE}


@pytest.mark.parametrize("engine", ENGINE_TYPES)
def test_prod_stack_passes_every_policy(mocks: RecordingMocks, engine: str) -> None:
    settings = stack_settings("prod", aws={"metadataEngine": engine})
    assert isinstance(settings, ProdSettings) and settings.aws.metadata_engine == engine
    build(mocks, settings, prod_secrets())
    assert_passes_and_was_checked(mocks, ENGINE_TYPES[engine])
