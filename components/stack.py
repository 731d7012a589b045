"""Compose the stack: read settings and secrets, then build the platform the settings name."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pulumi

from components.settings import PROJECT, ConfigError, Settings, load_settings

# Secret config keys; set them with `pulumi config set --secret <key> ...`.
KUBECONFIG = "kubeconfig"
JUICEFS_RSA_KEY = "juicefsRsaKey"
JUICEFS_PASSPHRASE = "juicefsPassphrase"
SECRET_KEYS = (KUBECONFIG, JUICEFS_RSA_KEY, JUICEFS_PASSPHRASE)


@dataclass(frozen=True)
class StackSecrets:
    """Credentials supplied through secret config; None means the program generates or skips it."""

    kubeconfig: pulumi.Output[str] | None = None
    juicefs_rsa_key: pulumi.Output[str] | None = None
    juicefs_passphrase: pulumi.Output[str] | None = None


def _decode(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def check_secrecy(keys: Iterable[str], is_secret: Callable[[str], bool] = pulumi.runtime.is_config_secret) -> None:
    """Refuse a credential stored in plain text and a setting stored as a secret, naming the key.

    The first would sit readable in Pulumi.<stack>.yaml. The second is read as a plain setting (it
    goes into resource names, inputs and stack outputs), so its encryption would protect nothing.
    """
    prefix = f"{PROJECT}:"
    problems = []
    for full_key in sorted(key for key in keys if key.startswith(prefix)):
        key = full_key.removeprefix(prefix)
        if key in SECRET_KEYS and not is_secret(full_key):
            problems.append(
                f"{full_key}: stored in plain text in the stack file, but it is a credential; "
                f"`pulumi config rm {key}`, then set it again with `pulumi config set --secret {key} ...`"
            )
        elif key not in SECRET_KEYS and is_secret(full_key):
            problems.append(
                f"{full_key}: stored as a secret, but it is a plain setting that ends up in resource inputs "
                "and stack outputs in plain text; set it without --secret (credentials are only "
                f"{', '.join(SECRET_KEYS)})"
            )
    if problems:
        listed = "\n".join(f"  - {problem}" for problem in problems)
        raise ConfigError(f"invalid stack config ({len(problems)} problem(s)):\n{listed}")


def read_settings(config: pulumi.Config, all_config: Mapping[str, str]) -> Settings:
    """Validate this stack's config; raises ConfigError before any resource exists."""
    check_secrecy(all_config)
    secret_keys = {f"{PROJECT}:{key}" for key in SECRET_KEYS}
    plain = {key: value for key, value in all_config.items() if key not in secret_keys}
    return load_settings(lambda key: _decode(config.get(key)), plain)


def all_config() -> dict[str, str]:
    """Every config key the engine passed to this program, so unknown ones can be refused."""
    return {**pulumi.runtime.get_config_env(), **pulumi.runtime.config.CONFIG.get()}


def read_secrets(config: pulumi.Config) -> StackSecrets:
    return StackSecrets(
        kubeconfig=config.get_secret(KUBECONFIG),
        juicefs_rsa_key=config.get_secret(JUICEFS_RSA_KEY),
        juicefs_passphrase=config.get_secret(JUICEFS_PASSPHRASE),
    )


def build_stack(
    settings: Settings, secrets: StackSecrets, opts: pulumi.ResourceOptions | None = None
) -> dict[str, Any]:
    """Register every resource of the stack; returns the stack outputs to export."""
    if settings.platform == "docker":
        from components.dev_stack import build_dev_stack

        return build_dev_stack(settings, opts)
    from components.prod_stack import build_prod_stack

    return build_prod_stack(settings, secrets, opts)
