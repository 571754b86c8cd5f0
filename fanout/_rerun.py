"""``fanout run INPUT --rerun EARLIER -o NEW``: the input lines earlier outputs say did not succeed.

An output record names its input line (``line``, 1-based) and carries that line's ``id``. A line is
*selected* when no record of it says ``succeeded``: it failed, expired or was rejected, or it has no
record at all (a run that stopped early without a journal). Two records for one line (a duplicate)
count as succeeded when either did. ``--rerun`` may be given once per earlier output, and their
records are read as one: after ``--rerun out.jsonl -o retry.jsonl``, the output of that rerun holds
only the lines it ran, so the next is ``--rerun out.jsonl --rerun retry.jsonl``, or every line that
succeeded the first time would have no record, and be sent again.

Everything is checked before anything is sent, so a mismatch is a configuration error (exit 2):

1. the input is read once. Each line gets the ``id`` the run gives it (``parse_line``: the line's
   own, or its number when it has none or cannot be parsed), kept as a 64-bit hash, so memory is
   about 9 bytes a line whatever the ids;
2. each earlier output is read record by record, and every record must name a line of the input and
   carry that line's id. The first that does not is reported with both ids (the input's is read
   again from the file, which costs nothing on the happy path).

A selected line whose ``id`` or ``inference_id`` belongs to a line that is not selected is rejected
again with the run's own wording (``duplicate id 'a': line 1 already has it``): the journal that
finds duplicates only sees the lines this run claims, and the earlier run rejected it for that.

Pure apart from reading the two files; ``RunCommand`` calls it in a worker thread, before it opens
its journal, whose fingerprint includes ``digest`` so a journal of another run is never resumed.
"""

from __future__ import annotations

import hashlib
import json
from array import array
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Final

from ._exceptions import ConfigError
from ._jsonl import parse_line

__all__ = ["NO_RECORD", "RerunSelection", "select_lines"]

NO_RECORD: Final = "no record"
"""How a selected line without any record in the earlier output is counted."""

_STATUSES: Final = ("succeeded", "failed", "expired", "rejected")
_SUCCEEDED: Final = 1
"""Status codes per line: 0 no record, then 1 + the index in ``_STATUSES``."""

# Per input line, in ``_kinds``:
_REQUEST: Final = 1
"""The line is not blank: the run reads it (as a request, or a rejection)."""
_OWN_INFERENCE_ID: Final = 2
"""The line fixes its own ``inference_id``, which a rerun sends again."""

_READ_CHUNK: Final = 1 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class RerunSelection:
    """Which input lines to run again (``chooses``), and what the earlier output said of them."""

    sources: tuple[str, ...]
    """The earlier outputs, as the user named them."""
    digest: str
    """sha256 of the earlier outputs' sha256s, in order."""
    lines: int
    """Non-blank input lines."""
    selected: int
    by_status: Mapping[str, int]
    """The selected lines by their status in the earlier output (``failed``, ``expired``,
    ``rejected``, or ``NO_RECORD``), only those with a count."""
    own_inference_ids: int
    """Selected lines that fix their own ``inference_id``: they are sent again under it."""
    _chosen: bytearray = field(repr=False)
    _conflicts: Mapping[int, str] = field(repr=False)

    @property
    def skipped(self) -> int:
        return self.lines - self.selected

    def chooses(self, line: int) -> bool:
        """Whether input line ``line`` (1-based) is run again."""
        return 0 < line <= len(self._chosen) and bool(self._chosen[line - 1])

    def conflict(self, line: int) -> str | None:
        """Why selected line ``line`` is rejected again (a line not run again has its id), or ``None``."""
        return self._conflicts.get(line)

    def describe(self) -> str:
        """One sentence for the user: ``rerun: 37 of 1,000 lines did not succeed in out.jsonl (...)``."""
        noun = "line" if self.lines == 1 else "lines"
        counts = ", ".join(f"{status} {count:,}" for status, count in self.by_status.items())
        where = " and ".join(self.sources)
        text = f"rerun: {self.selected:,} of {self.lines:,} {noun} did not succeed in {where}"
        if counts:
            text += f" ({counts})"
        text += f"; {self.skipped:,} skipped" if self.selected else "; nothing to send"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "sources": list(self.sources),
            "lines": self.lines,
            "selected": self.selected,
            "skipped": self.skipped,
            "by_status": dict(self.by_status),
            "own_inference_ids": self.own_inference_ids,
        }


def select_lines(source: BinaryIO, earlier: Sequence[str], *, input_name: str) -> RerunSelection:
    """Read the input (``source``, seekable; read from its start, and left anywhere) and the earlier
    outputs at the paths ``earlier``, and select the lines to run again. ``input_name`` names the
    input in messages.

    Raises ``ConfigError`` when an earlier output cannot be read, is not fanout output, was written
    by a fanout without the ``line`` field, or is not an output of this input.
    """
    ids, kinds, inference_ids = _read_input(source)
    statuses = bytearray(len(kinds))
    digests = []
    for path in earlier:
        digest = hashlib.sha256()
        _read_earlier(path, digest, source, ids, kinds, statuses, input_name)
        digests.append(digest.hexdigest())
    chosen = bytearray(len(kinds))
    counts = dict.fromkeys((*_STATUSES[1:], NO_RECORD), 0)
    own = 0
    for index, kind in enumerate(kinds):
        if kind & _REQUEST and statuses[index] != _SUCCEEDED:
            chosen[index] = 1
            code = statuses[index]
            counts[_STATUSES[code - 1] if code else NO_RECORD] += 1
            own += bool(kind & _OWN_INFERENCE_ID)
    selected = sum(counts.values())
    return RerunSelection(
        sources=tuple(earlier),
        digest=hashlib.sha256("".join(digests).encode()).hexdigest(),
        lines=sum(1 for kind in kinds if kind & _REQUEST),
        selected=selected,
        by_status={status: count for status, count in counts.items() if count},
        own_inference_ids=own,
        _chosen=chosen,
        _conflicts=_conflicts(source, chosen, ids, kinds, inference_ids),
    )


def _read_earlier(
    path: str,
    digest: Any,
    source: BinaryIO,
    ids: array[int],
    kinds: bytearray,
    statuses: bytearray,
    input_name: str,
) -> None:
    """Check each record of the earlier output at ``path`` against the input, and note its status."""
    where = f"--rerun {path!r}"
    for number, record in _records(path, digest):
        line = _line_of(record, number, where)
        if line > len(kinds) or not kinds[line - 1] & _REQUEST:
            size = f"{len(kinds):,} line" + ("" if len(kinds) == 1 else "s")
            has = "is blank" if line <= len(kinds) else f"does not exist: the input has {size}"
            raise ConfigError(
                f"{where} is not an output of the input {input_name!r}: it has a record for line "
                f"{line:,}, and that line of the input {has}"
            )
        record_id = record.get("id")
        if _key(record_id) != ids[line - 1]:
            theirs = _id_of_line(source, line)
            raise ConfigError(
                f"{where} is not an output of the input {input_name!r}: line {line:,} has id "
                f"{record_id!r}, the input's line {line:,} has id {theirs!r}"
            )
        status = record.get("status")
        if status not in _STATUSES:
            raise ConfigError(
                f"{where} is not fanout output: its line {number:,} has status {status!r}, not one of "
                "succeeded, failed, expired or rejected"
            )
        if statuses[line - 1] != _SUCCEEDED:
            statuses[line - 1] = 1 + _STATUSES.index(status)


def _key(value: object) -> int:
    """A 64-bit hash of an id as JSON has it (the hash is only compared within this process)."""
    return hash(value) if isinstance(value, str) else hash(("not a string", json.dumps(value)))


def _input_lines(source: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """The input's lines, numbered as the run numbers them (blank lines count, and are skipped)."""
    for number, raw in enumerate(source, 1):
        line = raw.rstrip(b"\r\n")
        if line.strip():
            yield number, line


def _read_input(source: BinaryIO) -> tuple[array[int], bytearray, array[int]]:
    """Per line: the hash of the id the run gives it, its kind, and the hash of its own
    inference_id (0 unless its kind says it has one)."""
    ids: array[int] = array("q")
    kinds = bytearray()
    inference_ids: array[int] = array("q")
    source.seek(0)
    for raw in source:
        line = raw.rstrip(b"\r\n")
        parsed = parse_line(line, len(kinds) + 1) if line.strip() else None
        ids.append(_key(parsed.id) if parsed is not None else 0)
        inference_id = parsed.inference_id if parsed is not None else None
        inference_ids.append(_key(inference_id) if inference_id is not None else 0)
        kinds.append(
            0 if parsed is None else _REQUEST | (_OWN_INFERENCE_ID if inference_id is not None else 0)
        )
    return ids, kinds, inference_ids


def _id_of_line(source: BinaryIO, line: int) -> str | None:
    source.seek(0)
    for number, raw in _input_lines(source):
        if number == line:
            return parse_line(raw, number).id
    return None  # pragma: no cover - the caller knows the line exists


def _records(path: str, digest: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    """The earlier output's records with their line numbers in that file; ``digest`` sees every byte."""
    where = f"--rerun {path!r}"
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below, also when the caller stops early
    except OSError as exc:
        raise ConfigError(f"cannot read {where}: {exc.strerror}") from exc
    with handle:
        number = 0
        rest = b""
        while True:
            try:
                chunk = handle.read(_READ_CHUNK)
            except OSError as exc:
                raise ConfigError(f"cannot read {where}: {exc.strerror}") from exc
            digest.update(chunk)
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop() if chunk else b""
            for raw in lines:
                number += 1
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                except ValueError as exc:
                    raise ConfigError(
                        f"{where} is not fanout output: its line {number:,} is not JSON ({exc})"
                    ) from None
                if not isinstance(record, dict):
                    raise ConfigError(
                        f"{where} is not fanout output: its line {number:,} is not a JSON object"
                    )
                yield number, record
            if not chunk:
                return


def _line_of(record: dict[str, Any], number: int, where: str) -> int:
    if "line" not in record or record["line"] is None:
        raise ConfigError(
            f"{where} has a record without a line number (its line {number:,}, id {record.get('id')!r}): "
            "it was written by a fanout older than the output's line field, so its records cannot be "
            "matched to the input's lines; run the whole input again instead"
        )
    line = record["line"]
    if isinstance(line, bool) or not isinstance(line, int) or line < 1:
        raise ConfigError(
            f"{where} is not fanout output: its line {number:,} has line {line!r}, not an input line number"
        )
    return line


def _conflicts(
    source: BinaryIO, chosen: bytearray, ids: array[int], kinds: bytearray, inference_ids: array[int]
) -> dict[int, str]:
    """Selected lines whose id or inference_id belongs to a line that is not selected (the first
    such line owns it), with the reason a run gives a duplicate."""
    selected_ids = {ids[index] for index, flag in enumerate(chosen) if flag}
    selected_inference = {
        inference_ids[index] for index, flag in enumerate(chosen) if flag and kinds[index] & _OWN_INFERENCE_ID
    }
    id_owners: dict[int, int] = {}
    inference_owners: dict[int, int] = {}
    for index, kind in enumerate(kinds):
        if not kind & _REQUEST or chosen[index]:
            continue
        if ids[index] in selected_ids:
            id_owners.setdefault(ids[index], index + 1)
        if kind & _OWN_INFERENCE_ID and inference_ids[index] in selected_inference:
            inference_owners.setdefault(inference_ids[index], index + 1)
    if not id_owners and not inference_owners:
        return {}
    reasons: dict[int, str] = {}
    source.seek(0)
    for number, raw in _input_lines(source):
        if not chosen[number - 1]:
            continue
        owner = id_owners.get(ids[number - 1])
        column = "id"
        if owner is None and kinds[number - 1] & _OWN_INFERENCE_ID:
            owner = inference_owners.get(inference_ids[number - 1])
            column = "inference_id"
        if owner is None:
            continue
        parsed = parse_line(raw, number)  # the value itself, for the message: only for these lines
        value = parsed.id if column == "id" else parsed.inference_id
        reasons[number] = f"duplicate {column} {value!r}: line {owner} already has it"
    return reasons
