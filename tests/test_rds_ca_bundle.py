"""The committed RDS CA bundle: what `sslmode=verify-full` trusts for the prod Postgres metadata engine."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509

from components.aws.rds import load_ca_bundle
from components.settings import ProdSettings, RdsSettings
from tests.stacks import stack_settings

BUNDLE = RdsSettings().ca_bundle_file


def certificates() -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(load_ca_bundle(BUNDLE).encode())


def common_name(certificate: x509.Certificate) -> str:
    return str(certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)


def test_the_bundle_holds_only_amazon_rds_certificate_authorities() -> None:
    bundle = certificates()
    assert len(bundle) > 50
    for certificate in bundle:
        assert certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert common_name(certificate).startswith("Amazon RDS ")
        assert certificate.issuer.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)[0].value == (
            "Amazon Web Services, Inc."
        )


@pytest.mark.parametrize("region_key", ["region", "replica_region"])
def test_current_root_cas_cover_the_prod_regions(region_key: str) -> None:
    settings = stack_settings("prod")
    assert isinstance(settings, ProdSettings)
    aws = settings.aws
    region = getattr(aws, region_key)
    now = datetime.datetime.now(datetime.UTC)
    current = {
        common_name(certificate)
        for certificate in certificates()
        if certificate.not_valid_before_utc <= now < certificate.not_valid_after_utc
    }
    # RDS signs new instances with the RSA2048 G1 root of their region by default.
    assert f"Amazon RDS {region} Root CA RSA2048 G1" in current
