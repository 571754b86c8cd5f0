"""The journal: per-line states survive a crash, and the output is written exactly once."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import stat
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from fanout._exceptions import JournalError
from fanout._journal import ACCEPTED, READ, SENDING, Journal
from fanout._models import Submission

FINGERPRINT = {"endpoint_name": "ep", "input": "/in.jsonl", "output": "/out.jsonl"}


def _open(path: Path) -> Journal:
    return Journal.open(path, fingerprint=FINGERPRINT)


def _crash(journal: Journal) -> None:
    """What SIGKILL does to the journal: uncommitted work is lost, committed work stays, and the
    lock goes with the process."""
    journal._db.rollback()
    journal._db.close()
    if journal._lock is not None:
        os.close(journal._lock)


def _submission(inference_id: str, id: str) -> Submission:
    return Submission(
        inference_id=inference_id,
        id=id,
        route="s3",
        input_location="s3://staging/in/x",
        output_location="s3://out/r/x.out",
        failure_location="s3://out/f/x-error.out",
        attempts=3,
        submitted_at=10.0,
        accepted_at=11.0,
        deadline=100.0,
        staged=True,
    )


def test_a_new_journal_is_not_resumed_and_a_second_open_is(tmp_path: Path) -> None:
    journal = _open(tmp_path / "j")
    assert not journal.resumed
    journal.close()
    again = _open(tmp_path / "j")
    assert again.resumed
    again.close()


def test_a_journal_of_another_run_is_refused(tmp_path: Path) -> None:
    _open(tmp_path / "j").close()
    with pytest.raises(JournalError, match="belongs to another run: endpoint_name 'ep' \\(now 'other'\\)"):
        Journal.open(tmp_path / "j", fingerprint={**FINGERPRINT, "endpoint_name": "other"})


def test_a_file_that_is_not_a_journal_is_refused(tmp_path: Path) -> None:
    (tmp_path / "j").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(JournalError, match="cannot use"):
        _open(tmp_path / "j")


def test_duplicate_ids_and_inference_ids_are_reported_with_the_owning_line(tmp_path: Path) -> None:
    journal = _open(tmp_path / "j")
    assert journal.claim(line=1, crc=1, id="a", inference_id="i1", route="inline") is None
    assert journal.claim(line=2, crc=2, id="a", inference_id="i2", route="inline") == (
        "duplicate id 'a': line 1 already has it"
    )
    assert journal.claim(line=3, crc=3, id="b", inference_id="i1", route="inline") == (
        "duplicate inference_id 'i1': line 1 already has it"
    )
    assert journal.claim(line=4, crc=4, id="b", inference_id="i4", route="inline") is None
    journal.close()


def test_a_temporary_journal_finds_duplicates_among_many_ids() -> None:
    journal = Journal.temporary()
    for line in range(1, 2_501):
        assert journal.claim(line=line, crc=0, id=f"id-{line}", inference_id=f"i-{line}", route=None) is None
    assert journal.claim(line=9_999, crc=0, id="id-17", inference_id="x", route=None) is not None
    output = io.BytesIO()
    journal.attach_output(output)
    assert journal.write([(1, 0, "succeeded", b"a\n"), (2, 0, "succeeded", b"b\n")]) == 2
    assert output.getvalue() == b"a\nb\n"
    journal.close()


def test_states_survive_a_crash_and_outstanding_lists_sent_lines(tmp_path: Path) -> None:
    journal = _open(tmp_path / "j")
    for line, iid in enumerate(["i1", "i2", "i3", "i4"], start=1):
        journal.claim(line=line, crc=line, id=f"r{line}", inference_id=iid, route="inline")
    journal.mark_sending("i2", deadline=50.0, now=5.0)
    journal.mark_sending("i3", deadline=60.0, now=6.0)
    journal.mark_accepted(_submission("i3", "r3"))
    journal.mark_sending("i4", deadline=70.0, now=7.0)  # commits i3's acceptance with it
    journal.mark_accepted(_submission("i4", "r4"))  # lost in the crash: i4 stays in doubt
    _crash(journal)

    resumed = _open(tmp_path / "j")
    states = {row.line: row.state for row in resumed.rows()}
    assert states == {1: READ, 2: SENDING, 3: ACCEPTED, 4: SENDING}
    listed = {item.submission.inference_id: item for item in resumed.outstanding()}
    assert {iid: (item.line, item.crc, item.in_doubt) for iid, item in listed.items()} == {
        "i2": (2, 2, True),
        "i3": (3, 3, False),
        "i4": (4, 4, True),
    }
    outstanding = {iid: item.submission for iid, item in listed.items()}
    assert outstanding["i3"] == _submission("i3", "r3")
    assert outstanding["i2"].deadline == 50.0
    assert outstanding["i2"].output_location is None
    assert resumed.in_doubt("i2") and resumed.in_doubt("i4") and not resumed.in_doubt("i3")
    resumed.close()


def test_rows_are_paged_and_only_lines_known_at_open_are_listed(tmp_path: Path) -> None:
    journal = _open(tmp_path / "j")
    for line in range(1, 2_345):
        journal.claim(line=line, crc=line * 7, id=str(line), inference_id=f"i{line}", route=None)
    journal.close()
    resumed = _open(tmp_path / "j")
    resumed.claim(line=5_000, crc=0, id="new", inference_id="inew", route=None)
    rows = list(resumed.rows())
    assert [row.line for row in rows] == list(range(1, 2_345))
    assert all(row.crc == row.line * 7 for row in rows)
    resumed.close()


def _fresh(path: Path) -> tuple[Journal, BinaryIO]:
    journal = _open(path / "j")
    output = (path / "out").open("w+b")
    journal.attach_output(output)
    return journal, output


def _resume(path: Path) -> tuple[Journal, BinaryIO]:
    journal = _open(path / "j")
    output = (path / "out").open("r+b")
    journal.attach_output(output)
    return journal, output


class _DiesWhileWriting(io.BufferedRandom):
    """Writes only the first ``budget`` bytes it is given, then "dies"."""

    def __init__(self, raw: io.FileIO, budget: int) -> None:
        super().__init__(raw)
        self.budget = budget

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if len(data) > self.budget:
            super().write(data[: self.budget])
            super().flush()
            raise RuntimeError("killed")
        self.budget -= len(data)
        return super().write(data)


@pytest.mark.parametrize("budget", [0, 1, 5, 12, 13, 14])
def test_a_crash_while_writing_output_leaves_each_line_exactly_once(tmp_path: Path, budget: int) -> None:
    journal, output = _fresh(tmp_path)
    journal.write([(1, 0, "succeeded", b"one\n"), (2, 0, "succeeded", b"two\n")])
    output.close()
    dying = _DiesWhileWriting(io.FileIO(tmp_path / "out", "r+"), budget)
    dying.seek(0, os.SEEK_END)
    journal._output = dying
    with pytest.raises(RuntimeError, match="killed"):
        journal.write(
            [(3, 0, "succeeded", b"three\n"), (4, 0, "succeeded", b"four\n"), (5, 0, "succeeded", b"five\n")]
        )
    dying.close()
    _crash(journal)

    resumed, output = _resume(tmp_path)
    assert (tmp_path / "out").read_bytes() == b"one\ntwo\nthree\nfour\nfive\n"
    # The outcomes are recorded: a late duplicate delivery writes nothing.
    assert resumed.write([(4, 0, "succeeded", b"four again\n")]) == 0
    assert resumed.write([(6, 0, "succeeded", b"six\n")]) == 1
    output.close()
    resumed.close()
    assert (tmp_path / "out").read_bytes() == b"one\ntwo\nthree\nfour\nfive\nsix\n"
    assert _open(tmp_path / "j").statistics().done == 6


def test_a_crash_after_writing_but_before_forgetting_the_copy_rewrites_nothing(tmp_path: Path) -> None:
    journal, output = _fresh(tmp_path)
    journal.write([(1, 0, "succeeded", b"one\n")])
    journal.write([(2, 0, "succeeded", b"two\n")])
    output.close()
    _crash(journal)
    resumed, output = _resume(tmp_path)
    output.close()
    resumed.close()
    assert (tmp_path / "out").read_bytes() == b"one\ntwo\n"


def test_a_crash_between_commit_and_write_writes_the_line_on_resume(tmp_path: Path) -> None:
    journal, output = _fresh(tmp_path)
    journal.write([(1, 0, "succeeded", b"one\n")])
    output.close()
    journal._output = io.BytesIO()  # the commit happens, the bytes never reach the file
    journal.write([(2, 0, "succeeded", b"two\n")])
    _crash(journal)
    resumed, output = _resume(tmp_path)
    output.close()
    resumed.close()
    assert (tmp_path / "out").read_bytes() == b"one\ntwo\n"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "journal recorded 4 bytes already written"),
        (b"one\ntwo\nextra", "bytes after the last line"),
        (b"one\nTWO\n", "differs from the journal at byte 4"),
    ],
)
def test_an_output_file_that_is_not_this_runs_is_refused(
    tmp_path: Path, content: bytes, message: str
) -> None:
    journal, output = _fresh(tmp_path)
    journal.write([(1, 0, "succeeded", b"one\n")])
    journal.write([(2, 0, "succeeded", b"two\n")])
    output.close()
    journal.close()
    (tmp_path / "out").write_bytes(content)
    resumed = _open(tmp_path / "j")
    with (tmp_path / "out").open("r+b") as output, pytest.raises(JournalError, match=message):
        resumed.attach_output(output)
    resumed.close()


def test_write_needs_an_output(tmp_path: Path) -> None:
    journal = _open(tmp_path / "j")
    with pytest.raises(JournalError, match="attach_output"):
        journal.write([(1, 0, "succeeded", b"x\n")])
    journal.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batches=st.lists(st.lists(st.binary(min_size=0, max_size=6), min_size=1, max_size=4), max_size=5),
    crash_batch=st.integers(min_value=0, max_value=5),
    budget=st.integers(min_value=0, max_value=30),
)
def test_any_crash_point_yields_every_committed_line_exactly_once(
    tmp_path_factory: pytest.TempPathFactory, batches: list[list[bytes]], crash_batch: int, budget: int
) -> None:
    path = tmp_path_factory.mktemp("journal")
    journal, output = _fresh(path)
    expected = b""
    line = 0
    for index, batch in enumerate(batches):
        lines = []
        for payload in batch:
            line += 1
            text = payload.replace(b"\n", b"") + f"#{line}\n".encode()
            lines.append((line, 0, "succeeded", text))
        expected += b"".join(text for *_, text in lines)
        if index == crash_batch:
            output.close()
            dying = _DiesWhileWriting(io.FileIO(path / "out", "r+"), budget)
            dying.seek(0, os.SEEK_END)
            journal._output = dying
            with contextlib.suppress(RuntimeError):
                journal.write(lines)
            dying.close()
            break
        journal.write(lines)
    else:
        output.close()
    _crash(journal)
    resumed, output = _resume(path)
    output.close()
    resumed.close()
    assert (path / "out").read_bytes() == expected


_KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from fanout._journal import Journal
    journal = Journal.open(sys.argv[1], fingerprint={"run": "x"})
    output = open(sys.argv[2], "r+b" if journal.resumed else "w+b")
    journal.attach_output(output)
    start = int(sys.argv[3])
    for line in range(start, start + 50):
        journal.claim(line=line, crc=0, id=str(line), inference_id=f"i{line}", route="inline")
        journal.mark_sending(f"i{line}", deadline=1.0, now=1.0)
        journal.write([(line, 0, "succeeded", f"line {line}\\n".encode())])
    last = 900 + start
    journal.claim(line=last, crc=0, id=str(last), inference_id=f"i{last}", route="inline")
    journal.mark_sending(f"i{last}", deadline=1.0, now=1.0)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_sigkill_keeps_committed_state_and_the_output(tmp_path: Path) -> None:
    for start in (1, 51):
        result = subprocess.run(
            [sys.executable, "-c", _KILLER, str(tmp_path / "j"), str(tmp_path / "out"), str(start)],
            capture_output=True,
            timeout=60,
        )
        assert result.returncode == -signal.SIGKILL, result.stderr
        if start == 1:
            # The killed run left line 901 in doubt; its outcome arrives before the second run.
            journal = Journal.open(tmp_path / "j", fingerprint={"run": "x"})
            assert [o.submission.inference_id for o in journal.outstanding()] == ["i901"]
            with (tmp_path / "out").open("r+b") as output:
                journal.attach_output(output)
                journal.write([(901, 0, "succeeded", b"line 901\n")])
            journal.close()
    lines = (tmp_path / "out").read_bytes().decode().splitlines()
    assert sorted(lines) == sorted({f"line {n}" for n in [*range(1, 101), 901]})
    journal = Journal.open(tmp_path / "j", fingerprint={"run": "x"})
    stats = journal.statistics()
    assert (stats.done, stats.sending) == (101, 1)
    assert [o.submission.inference_id for o in journal.outstanding()] == ["i951"]
    journal.close()


def test_statuses_count_every_run(tmp_path: Path) -> None:
    journal, output = _fresh(tmp_path)
    journal.write([(1, 0, "succeeded", b"a\n"), (2, 0, "failed", b"b\n")])
    output.close()
    journal.close()
    resumed, output = _resume(tmp_path)
    resumed.write([(3, 0, "rejected", b"c\n"), (4, 0, "succeeded", b"d\n")])
    assert resumed.statuses() == {"succeeded": 2, "failed": 1, "rejected": 1}
    output.close()
    resumed.close()


def test_a_second_run_on_the_same_journal_is_refused_while_the_first_holds_it(tmp_path: Path) -> None:
    first = _open(tmp_path / "j")
    with pytest.raises(JournalError, match="in use by another fanout run"):
        _open(tmp_path / "j")
    # A separate process too: flock is per open file, so this is what another `fanout run` sees.
    script = (
        "import sys\n"
        "from fanout._journal import Journal\n"
        "from fanout._exceptions import JournalError\n"
        "try:\n"
        f"    Journal.open({str(tmp_path / 'j')!r}, fingerprint={FINGERPRINT!r})\n"
        "except JournalError as exc:\n"
        "    print(exc); sys.exit(7)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 7, done.stderr
    assert "in use" in done.stdout
    first.close()
    second = _open(tmp_path / "j")  # free again once the first run is over
    assert second.resumed
    second.close()


def test_the_journal_and_its_wal_are_readable_by_the_owner_only(tmp_path: Path) -> None:
    journal = _open(tmp_path / "j")
    journal.claim(line=1, crc=1, id="a", inference_id="i1", route="inline")
    journal.mark_sending("i1", deadline=9.0, now=1.0)
    for name in ("j", "j-wal", "j-shm"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600, name
    journal.close()


def test_unsent_requests_go_back_to_read_and_in_doubt_ones_stay_sending(tmp_path: Path) -> None:
    journal = _open(tmp_path / "j")
    for line, iid in enumerate(["i1", "i2", "i3"], start=1):
        journal.claim(line=line, crc=line, id=f"r{line}", inference_id=iid, route="inline")
        journal.mark_sending(iid, deadline=50.0, now=5.0)
    journal.mark_unsent("i1")  # every attempt failed to connect: never left
    journal.mark_accepted(replace(_submission("i2", "r2"), in_doubt=True))  # no 202: still in doubt
    journal.mark_sending("i3", deadline=80.0, now=8.0)  # sent again by a later run: stays SENDING
    _crash(journal)
    resumed = _open(tmp_path / "j")
    assert {row.line: row.state for row in resumed.rows()} == {1: READ, 2: SENDING, 3: SENDING}
    assert {item.submission.inference_id: item.submission.deadline for item in resumed.outstanding()} == {
        "i2": 50.0,
        "i3": 80.0,
    }
    resumed.close()
