"""Names for the load balancers in a private Route 53 zone: cas.<externalDomain>, scheduler.<externalDomain>."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from components.kubernetes.exposure import ExternalHosts
from components.settings import ProdSettings

RECORD_TTL_S = 300


def external_records(settings: ProdSettings, hosts: ExternalHosts, opts: pulumi.ResourceOptions) -> None:
    """CNAMEs to the load balancers, when aws.privateZoneId and kubernetes.externalDomain are set."""
    zone, domain = settings.aws.private_zone_id, settings.kubernetes.external_domain
    if zone is None or domain is None:
        return
    for component, target in (("cas", hosts.cas), ("scheduler", hosts.scheduler)):
        aws.route53.Record(
            f"dns-{component}",
            zone_id=zone,
            name=f"{component}.{domain}",
            type="CNAME",
            ttl=RECORD_TTL_S,
            records=[target],
            opts=opts,
        )
