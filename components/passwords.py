"""Credentials the program generates itself (pulumi-random), kept secret from the start."""

from __future__ import annotations

import pulumi
import pulumi_random as random


def generated_password(
    resource_name: str, *, length: int, parent: pulumi.Resource, upper: bool | None = None
) -> pulumi.Output[str]:
    """A random password of letters and digits only, so it fits in URLs, config lines and AUTH tokens.

    `upper=False` leaves out upper case as well.
    """
    password = random.RandomPassword(
        resource_name, length=length, special=False, upper=upper, opts=pulumi.ResourceOptions(parent=parent)
    )
    return pulumi.Output.secret(password.result)
