"""Pieces every AWS component here shares: the aws settings, customer-managed KMS keys and IAM policy documents."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pulumi
import pulumi_aws as aws

if TYPE_CHECKING:
    from components.settings import AwsSettings


def kms_key(
    name: str, description: str, region: str, aws_settings: AwsSettings, parent: pulumi.Resource
) -> aws.kms.Key:
    """A customer-managed key with yearly rotation.

    Protected and retained: deleting it would make everything it encrypted unreadable, so removing
    it from the program only drops it from the stack.
    """
    return aws.kms.Key(
        name,
        description=description,
        enable_key_rotation=True,
        deletion_window_in_days=aws_settings.kms_deletion_window_days,
        region=region,
        opts=pulumi.ResourceOptions(parent=parent, protect=True, retain_on_delete=True),
    )


def policy_json(statements: list[dict[str, Any]]) -> pulumi.Output[str]:
    """An IAM policy document; statements may hold Outputs (ARNs)."""
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": statements})


def service_trust_policy(service: str) -> str:
    """A role trust policy for an AWS service principal."""
    statement = {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})
