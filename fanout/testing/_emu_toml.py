"""``fanout emulate --print-config``: the emulator's configuration written as TOML that loads back.

The stdlib reads TOML (``tomllib``) but does not write it. The shape written here is known and
small (``config_to_data``: strings, numbers, booleans, lists, tables, lists of tables), so a small
writer does it instead of a dependency. ``dumps`` handles that shape generally: in a table, plain
values first (TOML needs them before any header), then each list of tables as ``[[a.b]]`` entries
(whose own contents are written inline), then each sub-table that holds tables under its own
``[a.b]`` header; a table of plain values (a distribution) stays inline, on its key's line. TOML
has no null: an unset value (None) becomes a comment that says so, and loading leaves it unset.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from ._emu_config import EmulatorConfig, config_to_data

__all__ = ["config_to_toml", "dumps"]

HEADER: Final = """\
# The fanout emulator's configuration (fanout emulate --print-config); the reference is docs/emulator.md.
# Edit it and serve it with: fanout emulate --config FILE.toml
# extends = "none" makes this file the whole configuration. A file without that line applies on top
# of the defaults instead: its top-level keys replace theirs, and its buckets, queues, topics and
# endpoints are merged with theirs by name.
"""

# what an unset value means, said where --print-config leaves it out
UNSET: Final = {
    "seed": "a random seed at each start, reported by GET /_fanout/stats",
    "staging": "no staging location is exported",
    "s3_failure_path": "failures are reported in notifications only",
    "success_topic": "no notification of successes",
    "error_topic": "no notification of failures",
    "throttle": "no throttling; e.g. throttle = {rate = 100.0, burst = 10.0, per_endpoint = false}",
}

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES: Final = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def config_to_toml(config: EmulatorConfig) -> str:
    """The whole ``config`` as TOML, with ``extends = "none"``: loading it gives ``config`` back."""
    return HEADER + dumps({"extends": "none", **config_to_data(config)}, unset=UNSET)


def dumps(data: Mapping[str, Any], *, unset: Mapping[str, str] | None = None) -> str:
    """``data`` as a TOML document; ``TypeError`` for a value TOML cannot hold.

    ``unset`` explains, by key name, what leaving a None value out of the document means.
    """
    lines: list[str] = []
    _table(lines, (), data, unset or {})
    return "\n".join(lines).strip("\n") + "\n"


def _is_table(value: Any) -> bool:
    """A mapping that holds tables gets a header; one of plain values reads better inline."""
    return isinstance(value, Mapping) and any(
        isinstance(item, Mapping) or _is_table_list(item) for item in value.values()
    )


def _is_table_list(value: Any) -> bool:
    return _is_list(value) and bool(value) and all(isinstance(item, Mapping) for item in value)


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def _table(
    lines: list[str], path: tuple[str, ...], table: Mapping[str, Any], unset: Mapping[str, str]
) -> None:
    for key, value in table.items():
        if not _is_table(value) and not _is_table_list(value):
            lines.append(_pair(key, value, unset))
    for key, value in table.items():
        if _is_table_list(value):
            for item in value:
                lines.extend(("", f"[[{_path((*path, key))}]]"))
                # inside an entry everything is inline: an entry reads as one block
                lines.extend(_pair(k, v, unset) for k, v in item.items())
    for key, value in table.items():
        if _is_table(value):
            lines.extend(("", f"[{_path((*path, key))}]"))
            _table(lines, (*path, key), value, unset)


def _pair(key: str, value: Any, unset: Mapping[str, str]) -> str:
    if value is None:
        note = unset.get(key)
        return f"# {_key(key)} is not set" + (f": {note}" if note else "")
    return f"{_key(key)} = {_value(value)}"


def _path(keys: tuple[str, ...]) -> str:
    return ".".join(_key(key) for key in keys)


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _string(text: str) -> str:
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char < " " or char == "\x7f":
            out.append(f"\\u{ord(char):04x}")  # TOML allows no raw control character in a string
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _value(value: Any) -> str:
    if isinstance(value, bool):  # before int: a bool is an int
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # always has a '.' or an exponent, so it loads back as a float
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, Mapping):
        items = (f"{_key(k)} = {_value(v)}" for k, v in value.items() if v is not None)
        return "{" + ", ".join(items) + "}"
    if _is_list(value):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    raise TypeError(f"TOML cannot hold {type(value).__name__} value {value!r}")
