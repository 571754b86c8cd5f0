"""The engine of ``fanout run`` against the in-process emulator: exactly once under AWS's defaults,
hostile input, paths in two roles, one run per journal, and requests in doubt."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest

from fanout import (
    ConfigError,
    EndpointNotFound,
    JournalError,
    Limits,
    RetryPolicy,
    ServiceUnreachable,
    SqsTracking,
    Staging,
)
from fanout._journal import DONE, READ, SENDING, Journal
from fanout._run_command import RunCommand, RunOptions, RunResult
from fanout._tracking import Tracker
from fanout.testing import (
    Distribution,
    Emulator,
    FaultConfig,
    NotificationFaults,
    default_config,
    open_emulator,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
async def emulator(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Emulator]:
    # AWS's defaults: no response in the notifications, and SNS can beat the 202.
    faults = FaultConfig(notifications=NotificationFaults(early_rate=0.5, duplicate_rate=0.1))
    async with open_emulator(replace(default_config(), faults=faults)) as emu:
        for name, value in emu.env.items():
            monkeypatch.setenv(name, value)
        yield emu


def _options(emu: Emulator, tmp_path: Path, **overrides: Any) -> RunOptions:
    values: dict[str, Any] = {
        "input": str(tmp_path / "in.jsonl"),
        "output": str(tmp_path / "out.jsonl"),
        "endpoint_name": emu.env["FANOUT_ENDPOINT"],
        "tracking": SqsTracking(queue_url=emu.env["FANOUT_QUEUE_URL"], wait_time_seconds=1),
        "staging": Staging(location=emu.env["FANOUT_STAGING"]),
        "limits": Limits(max_in_flight=8, max_pending=32),
    }
    values.update(overrides)
    return RunOptions(**values)


def _write(path: Path, lines: list[Any]) -> None:
    path.write_bytes(
        b"".join((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines)
    )


def _outputs(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def _sha(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()


async def _run(options: RunOptions, stop: anyio.Event | None = None) -> RunResult:
    with anyio.fail_after(60):
        return await RunCommand(options).run(stop=stop)


async def test_every_succeeded_line_carries_its_result_when_notifications_beat_the_202(
    emulator: Emulator, tmp_path: Path
) -> None:
    bodies = [{"n": n} for n in range(150)]
    _write(tmp_path / "in.jsonl", [{"id": str(n), "body": body} for n, body in enumerate(bodies)])
    result = await _run(_options(emulator, tmp_path))
    outputs = _outputs(tmp_path / "out.jsonl")
    assert len(outputs) == 150 and result.report.succeeded == 150
    for record in outputs:
        assert record["status"] == "succeeded"
        assert record["result"]["sha256"] == _sha(bodies[int(record["id"])])
    assert emulator.stats()["notifications"]["early"] > 0


async def test_hostile_lines_are_rejected_and_the_run_goes_on(emulator: Emulator, tmp_path: Path) -> None:
    lines: list[Any] = [
        b'{"id": "deep", "body": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"id": "surrogate-body", "body": "\\ud800"}',
        b'{"id": "\\ud800", "body": 1}',
        b'{"id": "surrogate-iid", "inference_id": "x\\udfff", "body": 1}',
        b'{"id": "infinite", "body": 1e400}',
        b'{"id": "nan", "body": NaN}',
        b'{"id": "bad-utf8", "body": "\xff"}',
        {"id": "fine", "body": {"emoji": "\U0001f600"}},
    ]
    _write(tmp_path / "in.jsonl", lines)
    options = _options(emulator, tmp_path, journal=str(tmp_path / "journal"))
    result = await _run(options)
    records = _outputs(tmp_path / "out.jsonl")
    assert len(records) == len(lines)
    assert sorted(record["status"] for record in records) == ["rejected"] * 7 + ["succeeded"]
    assert next(r for r in records if r["status"] == "succeeded")["id"] == "fine"
    reasons = " | ".join(record["failure_reason"] or "" for record in records)
    for fragment in ("nested 100001 levels deep", "lone surrogate", "1e400 is too large", "NaN", "UTF-8"):
        assert fragment in reasons
    assert result.report.rejected == 7
    # A rerun on the same journal finds everything done: no line makes it stop.
    again = await _run(options)
    assert (again.report.total, again.earlier) == (0, 8)


async def test_a_path_in_two_roles_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    _write(data, [{"body": 1}])
    before = data.read_bytes()
    (tmp_path / "link.jsonl").symlink_to(data)
    os.link(data, tmp_path / "hard.jsonl")
    base = RunOptions(
        input=str(data),
        output=str(tmp_path / "out.jsonl"),
        endpoint_name="ep",
        tracking=SqsTracking(queue_url="http://127.0.0.1:1/q"),
    )
    cases: list[dict[str, Any]] = [
        {"output": str(data)},
        {"output": str(tmp_path / "link.jsonl")},
        {"output": str(tmp_path / "hard.jsonl")},
        {"journal": str(tmp_path / "out.jsonl")},
        {"journal": str(data)},
        {"output": str(tmp_path / "j-wal"), "journal": str(tmp_path / "j")},
    ]
    for overrides in cases:
        with pytest.raises(ConfigError, match="are the same file"):
            RunCommand(replace(base, **overrides))
    assert data.read_bytes() == before
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "j").exists()


async def test_an_output_that_cannot_be_written_is_refused_with_its_reason(tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    _write(data, [{"body": 1}])
    base = RunOptions(
        input=str(data),
        output=str(tmp_path / "out.jsonl"),
        endpoint_name="ep",
        tracking=SqsTracking(queue_url="http://127.0.0.1:1/q"),
    )
    cases = {
        str(tmp_path / "missing" / "out.jsonl"): "its folder does not exist",
        str(tmp_path): "is a directory",
    }
    for output, reason in cases.items():
        with pytest.raises(ConfigError, match=reason):
            RunCommand(replace(base, output=output)).check_output_writable()


async def test_a_configuration_error_leaves_the_previous_output_alone(
    emulator: Emulator, tmp_path: Path
) -> None:
    _write(tmp_path / "in.jsonl", [{"body": n} for n in range(20)] + [b"{not json"])
    (tmp_path / "out.jsonl").write_bytes(b"an earlier run's results\n")
    journal = tmp_path / "journal"
    with pytest.raises(EndpointNotFound):
        await _run(_options(emulator, tmp_path, endpoint_name="typo", journal=str(journal)))
    assert (tmp_path / "out.jsonl").read_bytes() == b"an earlier run's results\n"
    # Nothing was sent, so the journal the run created is gone: the corrected command starts clean.
    assert not journal.exists()
    result = await _run(_options(emulator, tmp_path, journal=str(journal)))
    assert (result.report.succeeded, result.report.rejected) == (20, 1)


async def test_a_second_run_on_a_journal_in_use_is_refused(emulator: Emulator, tmp_path: Path) -> None:
    _write(tmp_path / "in.jsonl", [{"body": n} for n in range(40)])
    emulator.set_faults(FaultConfig(latency={"sagemaker": Distribution("constant", ms=30.0)}))
    options = _options(emulator, tmp_path, journal=str(tmp_path / "journal"), limits=Limits(max_in_flight=2))
    async with anyio.create_task_group() as tg:
        results: list[RunResult] = []

        async def first() -> None:
            results.append(await _run(options))

        tg.start_soon(first)
        with anyio.fail_after(10):
            while not (tmp_path / "out.jsonl").exists():
                await anyio.sleep(0.01)
        written = (tmp_path / "out.jsonl").read_bytes()
        with pytest.raises(JournalError, match="in use by another fanout run"):
            await RunCommand(options).run()
        assert (tmp_path / "out.jsonl").read_bytes().startswith(written)
    assert results[0].report.succeeded == 40
    assert len(_outputs(tmp_path / "out.jsonl")) == 40


async def test_notifications_leave_the_queue_only_after_their_line_is_in_the_journal(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = tmp_path / "journal"
    _write(tmp_path / "in.jsonl", [{"body": n} for n in range(60)])
    checked: list[str] = []
    original: Callable[[Tracker, str], None] = Tracker.acknowledge

    def acknowledge(self: Tracker, inference_id: str) -> None:
        with sqlite3.connect(journal) as db:
            (state,) = db.execute(
                "SELECT state FROM requests WHERE inference_id = ?", (inference_id,)
            ).fetchone()
        assert state == DONE
        checked.append(inference_id)
        original(self, inference_id)

    monkeypatch.setattr(Tracker, "acknowledge", acknowledge)
    await _run(_options(emulator, tmp_path, journal=str(journal)))
    assert len(checked) == 60
    with anyio.fail_after(10):
        while sum(emulator.stats()["queues"]["fanout-notifications"][k] for k in ("visible", "in_flight")):
            await anyio.sleep(0.05)


async def test_requests_that_never_left_are_sent_on_resume_not_left_in_doubt(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = tmp_path / "journal"
    _write(tmp_path / "in.jsonl", [{"id": str(n), "body": n} for n in range(50)])
    # A first run stops early and leaves a journal behind.
    first = RunCommand(_options(emulator, tmp_path, journal=str(journal), limits=Limits(max_in_flight=2)))
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: first.run(stop=stop))
        with anyio.fail_after(20):
            while sum(first.progress().completed.values()) < 10:
                await anyio.sleep(0.01)
        stop.set()
    # The resume finds the endpoint unreachable: connection refused, nothing is sent.
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", "http://127.0.0.1:9")
    fast = RetryPolicy(attempts=2, wait_initial=0.01, wait_max=0.02)
    with pytest.raises(ServiceUnreachable):
        await _run(_options(emulator, tmp_path, journal=str(journal), retry=fast))
    with sqlite3.connect(journal) as db:
        states = dict(db.execute("SELECT state, COUNT(*) FROM requests GROUP BY state").fetchall())
    assert SENDING not in states, states  # not in doubt: they provably never left
    monkeypatch.delenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME")
    result = await _run(_options(emulator, tmp_path, journal=str(journal)))
    assert result.statuses == {"succeeded": 50}
    assert result.report.resends == 0
    assert sorted(int(record["id"]) for record in _outputs(tmp_path / "out.jsonl")) == list(range(50))
    assert emulator.stats()["duplicate_inference_ids"] == 0


def _leave_in_doubt(journal_path: Path, options: RunOptions, lines: int) -> None:
    """What a run killed mid-send leaves: lines claimed and marked SENDING, nothing else."""
    journal = Journal.open(
        journal_path,
        fingerprint={
            "endpoint_name": options.endpoint_name,
            "input": os.path.abspath(options.input),
            "output": os.path.abspath(options.output),
        },
    )
    raw = Path(options.input).read_bytes().splitlines()
    import zlib

    for line in range(1, lines + 1):
        journal.claim(
            line=line,
            crc=zlib.crc32(raw[line - 1]),
            id=str(line - 1),
            inference_id=f"doubt-{line}",
            route="inline",
        )
        journal.mark_sending(f"doubt-{line}", deadline=time.time() + 3600, now=time.time())
    journal.attach_output(open(options.output, "w+b"))  # noqa: SIM115
    journal.close()


async def test_requests_in_doubt_are_sent_again_under_their_inference_id(
    emulator: Emulator, tmp_path: Path
) -> None:
    _write(tmp_path / "in.jsonl", [{"id": str(n), "body": n} for n in range(10)])
    options = _options(emulator, tmp_path, journal=str(tmp_path / "journal"))
    _leave_in_doubt(tmp_path / "journal", options, lines=3)
    result = await _run(options)
    assert result.statuses == {"succeeded": 10}
    assert result.report.resends == 3
    ids = {record["id"]: record["inference_id"] for record in _outputs(tmp_path / "out.jsonl")}
    assert [ids[str(n)] for n in range(3)] == ["doubt-1", "doubt-2", "doubt-3"]


async def test_at_most_once_awaits_requests_in_doubt_no_shorter_than_sqs_can_hide_them(
    emulator: Emulator, tmp_path: Path
) -> None:
    _write(tmp_path / "in.jsonl", [{"id": str(n), "body": n} for n in range(10)])
    retry = RetryPolicy(at_most_once=True, in_doubt_wait=15.0)
    options = _options(emulator, tmp_path, journal=str(tmp_path / "journal"), retry=retry)
    _leave_in_doubt(tmp_path / "journal", options, lines=2)
    batch = RunCommand(options)
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: batch.run(stop=stop))
        with anyio.fail_after(20):
            while batch.progress().completed.get("succeeded", 0) < 8:
                await anyio.sleep(0.02)
        progress = batch.progress()
        assert progress.in_doubt == 2
        assert progress.in_doubt_until is not None
        # Visibility timeout (60 s) plus a long poll (1 s here) plus a margin, not 15 s.
        assert progress.in_doubt_until - time.time() > 60
        stop.set()
    assert emulator.stats()["duplicate_inference_ids"] == 0
    with sqlite3.connect(tmp_path / "journal") as db:
        states = dict(db.execute("SELECT state, COUNT(*) FROM requests GROUP BY state").fetchall())
    assert states == {DONE: 8, SENDING: 2}
    assert READ not in states
