"""How JuiceFS reaches its bucket: least-privilege S3 and KMS rights on the primary bucket only.

With an EKS OIDC provider configured (aws.oidcProviderArn/Url) the rights go to an IAM role that
only the CSI mount pods' service account can assume (IRSA), so no key exists anywhere. Without
one, a dedicated IAM user gets them and its access key lives only in secret Outputs (and, by the
nature of JuiceFS, obfuscated in the metadata engine).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pulumi
import pulumi_aws as aws

from components.aws.common import policy_json

if TYPE_CHECKING:
    from components.settings import ProdSettings

# The Kubernetes service account the JuiceFS mount pods run as on the IRSA path; it lives in
# kubernetes.csiNamespace, where the CSI driver starts mount pods.
MOUNT_SERVICE_ACCOUNT = "juicefs-mount-nativelink"
# The CSI node plugin's own account (the chart's serviceAccount.node.name). A volume provisioned before
# IRSA was set has no mount-service-account in its attributes, and its mount pods run as this one
# (csi-driver pkg/config/setting.go:615,636-638), so it gets the role too.
CSI_NODE_SERVICE_ACCOUNT = "juicefs-csi-node-sa"
IRSA_SERVICE_ACCOUNTS = (MOUNT_SERVICE_ACCOUNT, CSI_NODE_SERVICE_ACCOUNT)


def juicefs_s3_policy(bucket_arn: pulumi.Input[str], key_arn: pulumi.Input[str], region: str) -> pulumi.Output[str]:
    """Read, write and delete objects, list the bucket, use the bucket's key through S3 only."""
    return policy_json(
        [
            {
                "Sid": "Bucket",
                "Effect": "Allow",
                "Action": ["s3:ListBucket", "s3:ListBucketMultipartUploads", "s3:GetBucketLocation"],
                "Resource": bucket_arn,
            },
            {
                "Sid": "Objects",
                "Effect": "Allow",
                "Action": [
                    "s3:GetObject",
                    "s3:PutObject",
                    "s3:DeleteObject",
                    "s3:AbortMultipartUpload",
                    "s3:ListMultipartUploadParts",
                ],
                "Resource": pulumi.Output.concat(bucket_arn, "/*"),
            },
            {
                "Sid": "BucketKey",
                "Effect": "Allow",
                "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                "Resource": key_arn,
                "Condition": {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}},
            },
        ]
    )


def irsa_trust_policy(
    provider_arn: str, provider_url: str, namespace: str, service_accounts: Sequence[str]
) -> pulumi.Output[str]:
    """Only the named service accounts, with the STS audience, may assume the role."""
    return policy_json(
        [
            {
                "Effect": "Allow",
                "Principal": {"Federated": provider_arn},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {
                        f"{provider_url}:sub": [
                            f"system:serviceaccount:{namespace}:{account}" for account in service_accounts
                        ],
                        f"{provider_url}:aud": "sts.amazonaws.com",
                    }
                },
            }
        ]
    )


class JuiceFsS3Access(pulumi.ComponentResource):
    """JuiceFS's identity for S3: an IRSA role, or an IAM user with an access key."""

    # Set on the IRSA path: annotate the mount pods' service account with it.
    role_arn: pulumi.Output[str] | None
    # Set on the IAM-user path, as secrets.
    access_key: pulumi.Output[str] | None
    secret_key: pulumi.Output[str] | None
    # The rights themselves: whoever uses the identity waits for it.
    policy: pulumi.Resource

    def __init__(
        self,
        name: str,
        settings: ProdSettings,
        bucket_arn: pulumi.Input[str],
        key_arn: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("nativelink:storage:JuiceFsS3Access", name, None, opts)
        aws_settings = settings.aws
        child = pulumi.ResourceOptions(parent=self)
        policy = juicefs_s3_policy(bucket_arn, key_arn, aws_settings.region)
        self.role_arn = None
        self.access_key = None
        self.secret_key = None

        if aws_settings.oidc_provider_arn is not None and aws_settings.oidc_provider_url is not None:
            role = aws.iam.Role(
                f"{name}-irsa",
                description="JuiceFS mount pods (IRSA): the NativeLink CAS bucket only",
                assume_role_policy=irsa_trust_policy(
                    aws_settings.oidc_provider_arn,
                    aws_settings.oidc_provider_url,
                    settings.kubernetes.csi_namespace,
                    IRSA_SERVICE_ACCOUNTS,
                ),
                opts=child,
            )
            self.policy = aws.iam.RolePolicy(f"{name}-s3", role=role.id, policy=policy, opts=child)
            self.role_arn = role.arn
        else:
            user = aws.iam.User(f"{name}-user", opts=child)
            self.policy = aws.iam.UserPolicy(f"{name}-s3", user=user.name, policy=policy, opts=child)
            key = aws.iam.AccessKey(f"{name}-key", user=user.name, opts=child)
            self.access_key = pulumi.Output.secret(key.id)
            self.secret_key = pulumi.Output.secret(key.secret)

        self.register_outputs({"roleArn": self.role_arn, "accessKey": self.access_key, "secretKey": self.secret_key})
