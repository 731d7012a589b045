"""README.md names only what exists: config keys as the program reads them, make targets, stack outputs."""

from __future__ import annotations

import re
import shlex
import typing
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from components.juicefs.backup import restore_commands, s3_dump_destination
from components.nativelink import layout
from components.nativelink.render import SCHEDULER
from components.settings import PLATFORMS
from components.stack import SECRET_KEYS
from tests.mocks import RecordingMocks
from tests.stacks import build, fresh_exports, resolve_exports, stack_settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def setting_keys(model: type[BaseModel] | None = None, prefix: str = "") -> Iterator[str]:
    """Every config key the settings accept, objects and leaves, as `pulumi config set --path` spells it.

    Without a model: the keys of every platform's settings, each once.
    """
    if model is None:
        yield from dict.fromkeys(key for platform in PLATFORMS.values() for key in setting_keys(platform))
        return
    for name, field in model.model_fields.items():
        key = prefix + (field.alias or name)
        yield key
        nested = [arg for arg in typing.get_args(field.annotation) or (field.annotation,) if isinstance(arg, type)]
        for arg in nested:
            if issubclass(arg, BaseModel):
                yield from setting_keys(arg, key + ".")


def config_table_keys() -> list[str]:
    """The backticked keys in the first column of the README's configuration table."""
    section = README.split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [key for row in rows for key in re.findall(r"`([^`]+)`", row.split("|")[1])]


def test_the_config_table_names_only_real_keys() -> None:
    known = set(setting_keys())
    keys = config_table_keys()
    assert len(keys) > 30
    for key in keys:
        if key.endswith(".*"):
            assert any(k.startswith(key[:-1]) for k in known), key
        else:
            assert key in known, f"README names {key!r}, which the settings do not read"


def test_every_setting_is_documented() -> None:
    """In the README's table or, for prod, as a commented key of Pulumi.prod.yaml."""
    documented = set(config_table_keys())
    prod_file = (ROOT / "Pulumi.prod.yaml").read_text()
    keys = set(setting_keys())
    for key in sorted(k for k in keys if not any(other.startswith(k + ".") for other in keys)):
        parents = {key.rsplit(".", depth)[0] for depth in range(key.count(".") + 1)}
        if parents & documented:
            continue
        assert re.search(rf"^\s*#?\s*{re.escape(key.rsplit('.', 1)[-1])}:", prod_file, re.MULTILINE), (
            f"{key} is in neither the README's configuration table nor Pulumi.prod.yaml"
        )


def test_secret_keys_are_the_programs() -> None:
    line = next(line for line in README.splitlines() if line.startswith("Secret config"))
    assert re.findall(r"`(\w+)`", line.split(":", 1)[1].split(".", 1)[0]) == list(SECRET_KEYS)


def test_make_targets_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.MULTILINE))
    named = set(re.findall(r"`make ([a-z-]+)`|^make ([a-z-]+)$", README, re.MULTILINE))
    named_targets = {target for pair in named for target in pair if target}
    assert named_targets >= {"dev-up", "dev-down", "test"}
    assert named_targets <= targets


def test_stack_outputs_exist(mocks: RecordingMocks) -> None:
    named = set(re.findall(r"pulumi stack output (?:--show-secrets )?(\w+)", README))
    assert named >= {"bazelFlags", "juicefsMetaUrl"}
    exports = build(mocks, stack_settings("dev"))
    # Prod's secrets left out: the key and passphrase are generated, so their outputs exist.
    assert named <= set(exports) | set(fresh_exports(stack_settings("prod")))
    # The output the quick start shows is the one the dev stack exports.
    shown = re.search(r"pulumi stack output bazelFlags --stack dev\n# (.*)\n", README)
    assert shown is not None
    assert resolve_exports(exports)["bazelFlags"] == (False, shown.group(1))


def test_dev_container_names_exist(mocks: RecordingMocks) -> None:
    section = README.split("## What the dev stack runs", 1)[1].split("\n## ", 1)[0]
    named = {name.replace("-N", "-0") for name in re.findall(r"^\| `([a-zA-Z0-9-]+)`", section, re.MULTILINE)}
    named |= set(re.findall(r"`(nativelink-[a-z-]+-probe)`", section))
    build(mocks, stack_settings("dev"))
    containers = {
        re.sub(r"-worker-[0-9]+$", "-worker-0", record.name)
        for record in mocks.of_type("docker:index/container:Container")
    }
    # Every container is documented, and nothing else.
    assert named == containers, named ^ containers


def test_the_drain_command_reaches_the_rendered_admin_endpoint() -> None:
    # NativeLink's admin route is keyed by scheduler name (v1.6.6 src/bin/nativelink.rs, set_drain_worker).
    route = f"http://127.0.0.1:{layout.ADMIN_PORT}{layout.ADMIN_PATH}/scheduler/{SCHEDULER}/set_drain_worker/"
    assert route in README


def test_the_restore_procedure_is_the_tested_one() -> None:
    """The README's restore commands are the ones tests/realtools/test_metadata_backup.py runs."""
    placeholder = "META_URL_PLACEHOLDER"
    dump_url = f"{s3_dump_destination('BUCKET', 'REGION')}DUMP"
    for command in restore_commands(placeholder, dump_url):
        line = shlex.join(command).replace(placeholder, '"$META_URL"')
        assert f"\n{line}\n" in README, line
