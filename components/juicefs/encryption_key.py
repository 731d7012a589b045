"""The RSA key of an encrypted JuiceFS volume, generated with a passphrase when none is supplied.

JuiceFS copies the PEM it is formatted with into the metadata engine; protected by a passphrase
(given to every client as JFS_RSA_PASSPHRASE), whoever reads the metadata and the bucket still
cannot decrypt. pulumi-tls emits only plain PEM, and encrypting it in the program would change on
every run (random salt and IV), so `openssl pkcs8` encrypts it once, when the key is created, and
the result is kept in state: previews show no diff. JuiceFS reads PKCS#8-encrypted keys
(juicefs v1.4 pkg/object/encrypt.go:66-110).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_command as command
import pulumi_random as random
import pulumi_tls as tls

from components.juicefs.commands import SecretEnv

# Reads the plain PEM on stdin, the passphrase from the environment: neither on a command line.
ENCRYPT_KEY_COMMAND = f"openssl pkcs8 -topk8 -v2 aes-256-cbc -passout env:{SecretEnv.RSA_PASSPHRASE}"
PASSPHRASE_LENGTH = 48


@dataclass(frozen=True)
class GeneratedKey:
    # Passphrase-protected PEM, what JuiceFS is formatted with (secret).
    protected_pem: pulumi.Output[str]
    passphrase: pulumi.Output[str]
    # The plain key, for restoring JuiceFS's own encrypted backups (secret).
    plain_pem: pulumi.Output[str]


def generate_protected_key(
    name: str, parent: pulumi.Resource, passphrase: pulumi.Output[str] | None = None
) -> GeneratedKey:
    """An RSA-2048 key and its passphrase-protected PEM; the passphrase is generated unless given."""
    # Losing either loses every encrypted metadata backup; the volume itself keeps a copy of the PEM.
    keep = pulumi.ResourceOptions(parent=parent, protect=True)
    key = tls.PrivateKey(f"{name}-rsa-key", algorithm="RSA", rsa_bits=2048, opts=keep)
    # Registered even when a passphrase is given: a protected resource must not drop out of the program
    # when juicefsPassphrase is set later (which changes nothing: the key was protected once).
    generated = random.RandomPassword(f"{name}-rsa-passphrase", length=PASSPHRASE_LENGTH, special=False, opts=keep)
    if passphrase is None:
        passphrase = pulumi.Output.secret(generated.result)
    plain: pulumi.Output[str] = pulumi.Output.secret(key.private_key_pem)
    protected = command.local.Command(
        f"{name}-rsa-key-protected",
        create=ENCRYPT_KEY_COMMAND,
        stdin=plain,
        environment={SecretEnv.RSA_PASSPHRASE: passphrase},
        # Its stdout is the key, encrypted or not: never in Pulumi's log.
        logging=command.local.Logging.NONE,
        opts=pulumi.ResourceOptions(
            parent=parent,
            additional_secret_outputs=["stdout", "stdin", "environment"],
            # Run once: the volume keeps the PEM of its first format for good (cmd/format.go:496-497), so
            # a new passphrase must not re-protect it; clients keep getting the one it was protected with.
            ignore_changes=["environment", "stdin"],
        ),
    )
    used = protected.environment.apply(lambda env: (env or {})[SecretEnv.RSA_PASSPHRASE])
    return GeneratedKey(
        protected_pem=pulumi.Output.secret(protected.stdout),
        passphrase=pulumi.Output.secret(used),
        plain_pem=plain,
    )
