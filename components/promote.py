"""Promote the version set (`nativelink-juicefs:versions`) from one stack's config file to another's.

    python -m components.promote dev prod            # rewrite Pulumi.prod.yaml, print its diff
    python -m components.promote dev prod --check    # write nothing; exit 1 if prod is behind dev

Only the versions block of the destination changes: its comments, key order, quoting and every other
key stay byte-identical (ruamel.yaml round trip; a file that ruamel cannot reproduce exactly is
refused rather than reformatted). The source's versions must pass the same `Versions` model the
program uses, so an unpinned or unknown image never reaches prod.

Exit codes: 0 done (or nothing to do / up to date), 1 `--check` found the destination behind,
2 refused (invalid or missing versions, missing or unreadable stack file, bad arguments).
Standard output carries only the diff (or, with `--check`, the drift report), so a workflow can put
it into a pull request as is; explanations go to standard error.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import io
import os
import re
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarstring import ScalarString

from components.settings import PROJECT, Versions, describe_error

if TYPE_CHECKING:
    from ruamel.yaml.tokens import CommentToken

VERSIONS_KEY = f"{PROJECT}:versions"
VERSION_KEYS = tuple((field.alias or name) for name, field in Versions.model_fields.items())

EXIT_OK = 0
EXIT_BEHIND = 1
EXIT_REFUSED = 2

_STACK_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Indentation styles tried, in order, until one reproduces the file byte for byte:
# (mapping indent, sequence indent, dash offset); the first is `key:\n- item`, the second `key:\n  - item`.
_INDENT_STYLES = ((2, 2, 0), (2, 4, 2), (4, 4, 0), (4, 6, 4), (4, 4, 2), (3, 3, 0), (3, 5, 2))


class PromotionError(Exception):
    """A refusal: nothing was written. The message names the file and key at fault."""


@dataclass(frozen=True)
class StackFile:
    """A stack config file as text, its round-trip document and the YAML settings that reproduce it."""

    path: Path
    text: str
    document: CommentedMap
    yaml: YAML


@dataclass(frozen=True)
class Drift:
    """One versions key on which the destination differs from the source (None: key absent)."""

    key: str
    source: str | None
    destination: Any

    @property
    def config_key(self) -> str:
        return f"{VERSIONS_KEY}.{self.key}"


# --- loading ---------------------------------------------------------------------------------------


def stack_path(directory: Path, stack: str) -> Path:
    if _STACK_NAME_RE.match(stack) is None:
        raise PromotionError(f"{stack!r} is not a stack name (letters, digits, '-', '_', '.')")
    return directory / f"Pulumi.{stack}.yaml"


def _new_yaml(mapping: int, sequence: int, offset: int) -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 1_000_000  # never fold long lines (descriptions, encrypted keys)
    yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
    return yaml


def _dump(yaml: YAML, document: Any) -> str:
    buffer = io.StringIO()
    yaml.dump(document, buffer)
    return buffer.getvalue()


def parse_stack_text(text: str, path: Path) -> StackFile:
    """Parse a stack file and find the YAML settings under which ruamel reproduces it exactly."""
    for mapping, sequence, offset in _INDENT_STYLES:
        yaml = _new_yaml(mapping, sequence, offset)
        try:
            document = yaml.load(text)
        except YAMLError as exc:
            raise PromotionError(f"{path.name}: not valid YAML: {exc}") from None
        if not isinstance(document, CommentedMap):
            raise PromotionError(f"{path.name}: expected a mapping with a `config:` key at the top level")
        if _dump(yaml, document) == text:
            return StackFile(path, text, document, yaml)
    raise PromotionError(
        f"{path.name}: cannot be rewritten without reformatting lines outside {VERSIONS_KEY} "
        "(unusual indentation, flow style or a missing final newline); edit it by hand or normalise it "
        "with `pulumi config set` first"
    )


def load_stack_file(path: Path) -> StackFile:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PromotionError(
            f"{path.name}: not found in {path.parent.resolve()}; create the stack first (`pulumi stack init`)"
        ) from None
    return parse_stack_text(text, path)


def _config(stack: StackFile) -> Mapping[str, Any] | None:
    config = stack.document.get("config")
    return config if isinstance(config, Mapping) else None


def read_versions(stack: StackFile) -> Any:
    """The raw value of the versions key (None when the file has no such key)."""
    config = _config(stack)
    return None if config is None else config.get(VERSIONS_KEY)


# --- validation ------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """ruamel's round-trip types as plain Python values (for messages and comparisons)."""
    if isinstance(value, ScalarString):
        return str(value)
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def validate_versions(raw: Any, source_name: str) -> dict[str, str]:
    """Check the source's versions with the program's own `Versions` model; return them as plain strings.

    Raises PromotionError listing every problem, each naming `nativelink-juicefs:versions.<key>` and
    the offending value.
    """
    if raw is None:
        raise PromotionError(
            f"{source_name}: {VERSIONS_KEY}: missing; nothing to promote (the source stack must pin "
            f"{', '.join(VERSION_KEYS)})"
        )
    plain = _plain(raw)
    if not isinstance(plain, dict):
        raise PromotionError(
            f"{source_name}: {VERSIONS_KEY} = {plain!r}: must be a mapping of component to pinned version"
        )
    try:
        Versions.model_validate(plain, by_alias=True, by_name=False)
    except ValidationError as exc:
        problems = "\n".join(f"  - {describe_error(error, ('versions',))}" for error in exc.errors())
        raise PromotionError(
            f"{source_name}: refusing to promote ({exc.error_count()} problem(s)):\n{problems}"
        ) from None
    return {key: plain[key] for key in plain}


# --- comparing -------------------------------------------------------------------------------------


def version_drift(source: Mapping[str, str], destination: Any) -> list[Drift]:
    """Keys whose destination value differs from the source's, in the source's key order, then extras."""
    current = _plain(destination) if isinstance(destination, Mapping) else {}
    drift = [
        Drift(key, value, current.get(key))
        for key, value in source.items()
        if key not in current or current[key] != value
    ]
    drift += [Drift(key, None, value) for key, value in current.items() if key not in source]
    return drift


def describe_drift(drift: Sequence[Drift], source: str, destination: str) -> str:
    if not drift:
        return f"{destination} has {source}'s versions.\n"
    lines = [f"{destination} is behind {source} on {len(drift)} version key(s):"]
    for item in drift:
        if item.source is None:
            lines.append(f"  {item.config_key}: only in {destination} ({item.destination!r}); promoting removes it")
        elif item.destination is None:
            lines.append(f"  {item.config_key}: missing in {destination}; {source} has {item.source!r}")
        else:
            lines.append(f"  {item.config_key}: {destination} has {item.destination!r}; {source} has {item.source!r}")
    lines.append(f"Promote with: python -m components.promote {source} {destination}")
    return "\n".join(lines) + "\n"


# --- applying --------------------------------------------------------------------------------------
#
# ruamel attaches the comment lines that follow a block to the block's *last* entry (for example the
# comment above the next config key belongs to the last version). Before keys are added or removed,
# that trailing part is detached and afterwards re-attached to whatever entry is last, so those
# comments stay where they were in the file.


def _last_entry(node: Any) -> tuple[Any, Any] | None:
    """(container, key) of the deepest last entry of a block mapping or sequence."""
    if isinstance(node, CommentedMap) and len(node) > 0:
        key = list(node.keys())[-1]
        return _last_entry(node[key]) or (node, key)
    if isinstance(node, CommentedSeq) and len(node) > 0:
        return _last_entry(node[-1]) or (node, len(node) - 1)
    return None


def _comment_slot(container: Any) -> int:
    return 2 if isinstance(container, CommentedMap) else 0


def _detach_trailing(node: CommentedMap) -> CommentToken | None:
    """Cut the comment lines after a block's last entry that belong to the block's level or above.

    Lines indented deeper than the block's own keys stay with its last entry (they annotate it); the
    last entry's end-of-line comment stays too. The returned token holds the lines that move.
    """
    last = _last_entry(node)
    if last is None:
        return None
    container, key = last
    slots = container.ca.items.get(key)
    slot = _comment_slot(container)
    if not slots or slots[slot] is None:
        return None
    token: CommentToken = slots[slot]
    lines = str(token.value).split("\n")
    # lines[0] is the rest of the entry's own line; the final element is "" after the last newline.
    column = node.lc.col or 0
    split = 1
    for index in range(1, len(lines)):
        line = lines[index]
        if line.strip() and len(line) - len(line.lstrip(" ")) > column:
            split = index + 1
    kept, moved = "\n".join(lines[:split]) + "\n", "\n".join(lines[split:])
    if not moved.strip():
        return None
    if kept.strip():
        kept_token = copy.copy(token)
        kept_token.value = kept
        slots[slot] = kept_token
    else:
        slots[slot] = None
    moved_token = copy.copy(token)
    moved_token.value = moved
    return moved_token


def _attach_trailing(node: Any, trailing: CommentToken | None) -> None:
    last = _last_entry(node)
    if trailing is None or last is None:
        return
    container, key = last
    slot = _comment_slot(container)
    slots = container.ca.items.setdefault(key, [None, None, None, None])
    current: CommentToken | None = slots[slot]
    token = copy.copy(trailing)
    token.value = (str(current.value) if current is not None else "\n") + str(trailing.value)
    slots[slot] = token


def _restyle(old: Any, new: str) -> Any:
    """Keep the destination's quoting style for a value that is replaced."""
    return type(old)(new) if isinstance(old, ScalarString) else new


def apply_versions(destination: StackFile, versions: Mapping[str, str]) -> str:
    """The destination file's new text with its versions block set to `versions`.

    Existing keys keep their place, comments and quoting; new keys are appended in the source's order;
    keys the source does not have are removed. Nothing outside the block changes. Does not write.
    """
    document = destination.yaml.load(destination.text)  # a fresh tree (deepcopy drops comments)
    config = document.get("config")
    if config is None:
        trailing = _detach_trailing(document)
        document["config"] = CommentedMap({VERSIONS_KEY: CommentedMap(versions.items())})
        _attach_trailing(document, trailing)
    elif not isinstance(config, CommentedMap):
        raise PromotionError(f"{destination.path.name}: `config:` is not a mapping")
    elif not isinstance(block := config.get(VERSIONS_KEY), CommentedMap):
        trailing = _detach_trailing(config)
        config[VERSIONS_KEY] = CommentedMap(versions.items())
        _attach_trailing(config, trailing)
    else:
        trailing = _detach_trailing(block)
        for key in [key for key in block if key not in versions]:
            del block[key]
        for key, value in versions.items():
            block[key] = _restyle(block[key], value) if key in block else value
        _attach_trailing(block, trailing)

    text = _dump(destination.yaml, document)
    check = parse_stack_text(text, destination.path)
    if _plain(read_versions(check)) != dict(versions):
        raise PromotionError(f"{destination.path.name}: internal error: rewritten versions do not read back")
    return text


def unified_diff(old: str, new: str, name: str) -> str:
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True),
            new.splitlines(keepends=True),
            fromfile=f"a/{name}",
            tofile=f"b/{name}",
        )
    )


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` in one rename, keeping the file's permissions."""
    mode = path.stat().st_mode & 0o7777
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
        Path(temporary).chmod(mode)
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# --- command line ----------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m components.promote",
        description=f"Copy {VERSIONS_KEY} from one stack's config file to another's and print the diff.",
    )
    parser.add_argument("source", help="stack whose versions are promoted, e.g. dev")
    parser.add_argument("destination", help="stack that receives them, e.g. prod")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if the destination's versions differ"
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(),
        metavar="PATH",
        help="directory holding the Pulumi.<stack>.yaml files (default: the current directory)",
    )
    return parser


def run(argv: Sequence[str], stdout: TextIO, stderr: TextIO) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:  # argparse already printed the usage error
        return EXIT_OK if exc.code in (0, None) else EXIT_REFUSED
    source_name, destination_name = args.source, args.destination
    try:
        if source_name == destination_name:
            raise PromotionError("source and destination are the same stack")
        source = load_stack_file(stack_path(args.dir, source_name))
        destination = load_stack_file(stack_path(args.dir, destination_name))
        versions = validate_versions(read_versions(source), source.path.name)
        drift = version_drift(versions, read_versions(destination))
        if args.check:
            stdout.write(describe_drift(drift, source_name, destination_name))
            return EXIT_BEHIND if drift else EXIT_OK
        if not drift:
            stderr.write(f"{destination.path.name} already has {source_name}'s versions; nothing to do.\n")
            return EXIT_OK
        new_text = apply_versions(destination, versions)
    except PromotionError as exc:
        stderr.write(f"promote: {exc}\n")
        return EXIT_REFUSED
    stdout.write(unified_diff(destination.text, new_text, destination.path.name))
    write_atomically(destination.path, new_text)
    stderr.write(
        f"Promoted {source.path.name}'s versions to {destination.path.name} ({len(drift)} key(s) changed); "
        "review the diff above and open a pull request.\n"
    )
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    return run(sys.argv[1:] if argv is None else argv, sys.stdout, sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
