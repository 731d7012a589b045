"""Metadata backups that work at CAS scale, and the commands that restore one.

JuiceFS's own hourly backup skips a volume of a million inodes or more at the default interval
(juicefs v1.4 pkg/vfs/backup.go:70-77), and a CAS holds millions of files: its metadata would go
unbacked silently. So a scheduled `juicefs dump --binary` (compact, streamed, zstd-compressed) is
copied with `juicefs sync` into the volume's bucket under DUMP_PREFIX, which S3 replicates to the
second region with everything else. Pure functions: the prod CronJob runs `dump_script`, the README
gives `restore_commands`, and the real-tool tests run both.
"""

from __future__ import annotations

import shlex

DUMP_PREFIX = "metadata-dumps"
# Where the job writes the dump before copying it (its own volume).
DUMP_DIR = "/dumps"
DUMP_THREADS = 10
DUMP_SUFFIX = ".dump.zstd"
# Both read from the job's environment, never from its command line.
META_URL_ENV = "META_URL"


def s3_dump_destination(bucket: str, region: str) -> str:
    """The `juicefs sync` URL of the dump prefix in an AWS bucket."""
    return f"s3://{bucket}.s3.{region}.amazonaws.com/{DUMP_PREFIX}/"


def dump_script(destination: str, *, keep_key: bool, https: bool = True, dump_dir: str = DUMP_DIR) -> str:
    """Dump the metadata named by $META_URL (password in $META_PASSWORD) and copy it to `destination`.

    The dump is written under a temporary name and renamed when complete (cmd/dump.go), and only
    complete files are copied, so an interrupted run leaves nothing half-written in the bucket.
    `keep_key`: the dump keeps the volume's RSA key (`--keep-secret-key`); without it JuiceFS drops
    the key (pkg/meta/config.go RemoveSecret), cannot be given it again after a load, and a restored
    encrypted volume never mounts. JuiceFS obfuscates the key with the volume's UUID only (pkg/meta/
    config.go), which the dump holds too, so keep it only where the key is passphrase-protected.
    """
    dump = f'juicefs dump "${META_URL_ENV}" "$file" --binary --threads {DUMP_THREADS}'
    if keep_key:
        dump += " --keep-secret-key"
    sync = ["juicefs", "sync", *([] if https else ["--no-https"]), f"{dump_dir}/", destination]
    return "\n".join(
        [
            "set -eu",
            f'file="{dump_dir}/$(date -u +%Y%m%dT%H%M%SZ){DUMP_SUFFIX}"',
            dump,
            # A retried pod may find the temporary file of a dump that was killed.
            f"{shlex.join(sync)} --exclude '*.tmp'",
            'echo "metadata dump uploaded: $(basename "$file")"',
        ]
    )


def restore_commands(new_meta_url: str, dump_url: str, *, https: bool = True) -> list[list[str]]:
    """Copy one dump from the bucket and load it into an empty metadata engine at `new_meta_url`.

    `juicefs load` refuses a database that already holds a volume; afterwards the volume mounts from
    `new_meta_url` with the same objects. Run with META_PASSWORD and the object store's credentials in
    the environment.
    """
    name = dump_url.rsplit("/", 1)[1]
    source_dir = dump_url[: -len(name)]
    return [
        ["juicefs", "sync", *([] if https else ["--no-https"]), "--include", name, "--exclude", "*", source_dir, "./"],
        ["juicefs", "load", new_meta_url, name, "--binary", "--threads", str(DUMP_THREADS)],
    ]
