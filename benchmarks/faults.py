"""The fault matrix: ``fanout run --journal`` killed with SIGKILL and resumed, every fault on.

    python -m benchmarks.faults [--requests 100000] [--kills 10] [--seed S] [--quick] [--output DIR]

The real CLI (``fanout run``, a subprocess) scores a generated JSONL batch against the emulator
(``fanout.testing.run_emulator_process``, another subprocess) with every fault it can inject:
a throttling token bucket, 5xx answers, connections reset before the request is handled and
after it was accepted (the 202 is lost), and notifications that are duplicated, reordered,
delayed, lost, malformed or published before the 202. ``--tracker hybrid`` finds the lost ones
in S3. A few requests expire in the endpoint's queue: ``time_scale`` makes ``--request-ttl 60``
last 240 ms there, and every 12 s all workers stall for 0.6 s (``stalling_model``, the default
model behind a wait), so the requests queued early in a stall outlive their TTL.

The run is killed with SIGKILL at ``--kills`` random moments and rerun with the same command (the
same ``--journal``) until it finishes. Then the output is checked against the input, joined on
``id``:

- **lost**: input lines without an output line;
- **duplicated**: input lines with more than one output line;
- **wrong**: succeeded lines whose ``result.sha256`` is not the SHA-256 of their own request's bytes;
- **missing**: succeeded lines without a ``result``.

All four must be 0, every output line must parse and name an input id, no failed line may carry
another request's failure reason, and the last run must finish by itself (exit 0 or 1 with its
summary); otherwise the exit code is 1. The report goes to stdout and to ``faults.md`` and
``faults.json`` in ``--output``.

Kills: before the first run, ``--kills`` thresholds are drawn uniformly between 3 % and 97 % of
the input and sorted. Run *i* is killed once the output holds at least threshold *i* lines, after
a further random 0-250 ms (so a kill lands anywhere between two batched writes, and a threshold
already passed kills the resumed run during its start-up). A run that finishes first is not
killed. Every number is drawn from ``--seed``.

Why the throttled share is a few percent and not 30 %: fanout's AIMD limiter settles just under
any fixed token bucket (about 1 % of its calls throttled at steady state, more after each
restart). A bucket with a burst of 1 holds it to about 100 requests/s against 260/s allowed, at
2 % throttled, and overload signals that do not depend on the rate collapse it (503s on 2.5 % of
calls made 3,000 requests take 88 s instead of 9), so the 5xx faults here are 500s. No emulator
setting gives 30 % throttles at a rate that scores 100,000 requests in minutes; the share measured
is reported.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import anyio

if __package__ in (None, ""):  # ``python benchmarks/faults.py``: import the checkout as ``-m`` does
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import Table, command_line, header, json_summary, write_report
from fanout.testing import ModelResult, aws_environment, config_from_dict, default_model, run_emulator_process

__all__ = [
    "CI",
    "QUICK",
    "Check",
    "MatrixResult",
    "Plan",
    "RunRecord",
    "check_output",
    "main",
    "make_inputs",
    "run_matrix",
    "stalling_model",
]

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
STALL_ENV = "FANOUT_FAULT_MATRIX_STALL"
"""``<period>,<stall>`` in seconds, read by ``stalling_model`` in the emulator process."""
ENDPOINT = "fanout-faults"
QUEUE = "fanout-notifications"
STAGING = "s3://fanout-staging/inputs"
INLINE_LIMIT = 128_000
"""The service's limit for an inline Body, in bytes; bigger bodies go through S3 (``--payload auto``)."""
EXAMPLES = 5
"""Example lines kept per kind of failure."""

Kind = Literal["ok", "fail"]


# --- the plan --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything one matrix run does; the defaults are the full size."""

    requests: int = 100_000
    kills: int = 10
    seed: int = 1
    # faults (the emulator's FaultConfig / NotificationFaults)
    throttle_rate: float = 260.0
    """Token bucket rate (invokes/s): below what the client reaches, so that it binds."""
    throttle_burst: float = 10.0
    error_rate: float = 0.05
    error_statuses: tuple[int, ...] = (500,)
    """500 only: fanout takes a 503 as overload and slows down (see the module docstring)."""
    drop_connection_rate: float = 0.01
    drop_response_rate: float = 0.01
    duplicate_rate: float = 0.10
    loss_rate: float = 0.02
    malformed_rate: float = 0.01
    early_rate: float = 0.10
    delayed_share: float = 0.10
    """Share of deliveries delayed by more than ``delayed_over_ms``: a lognormal delay of sigma
    ``delay_sigma`` whose median puts that share above the threshold (a long tail, up to seconds)."""
    delayed_over_ms: float = 50.0
    delay_sigma: float = 2.0
    reorder_window_ms: float = 20.0
    # the endpoint: faster than the throttle lets the client go, but every ``stall_period`` seconds
    # every worker holds its request for up to ``stall_seconds``, so the queue grows past the TTL
    instances: int = 2
    per_instance: int = 4
    service_mean_ms: float = 20.0
    """Exponential service time: 8 workers at 20 ms serve about 400/s."""
    stall_period: float = 12.0
    stall_seconds: float = 0.6
    time_scale: float = 0.004
    """The emulator's time scale: ``--request-ttl 60`` expires after 60 x 0.004 = 0.24 s in its queue."""
    request_ttl: int = 60
    # the client
    resume_wait: float | None = None
    """``fanout run --resume-wait``; None leaves the CLI's default."""
    max_in_flight: int | None = None
    max_pending: int | None = None
    # inputs
    fail_share: float = 0.03
    base64_share: float = 0.10
    big_every: int = 500
    """One input in this many is over 128,000 bytes (through S3); one more is exactly 128,000 (inline)."""
    # bounds
    run_timeout: float = 900.0
    """Seconds one ``fanout run`` may take before it counts as hung."""
    total_timeout: float = 3_600.0
    max_final_runs: int = 3
    """Runs after the last kill before giving up (a run that exits 3, aborted, is rerun)."""

    @property
    def ttl_seconds(self) -> float:
        """The request TTL as the emulator applies it, in real seconds."""
        return self.request_ttl * self.time_scale

    def faults(self) -> dict[str, Any]:
        """The emulator's ``faults`` section (also what ``PUT /_fanout/faults`` takes)."""
        delay: dict[str, Any] = {"kind": "constant", "ms": 0}
        if 0 < self.delayed_share < 1:
            z = _normal_quantile(1.0 - self.delayed_share)
            median = self.delayed_over_ms * math.exp(-z * self.delay_sigma)
            delay = {"kind": "lognormal", "median_ms": median, "sigma": self.delay_sigma}
        return {
            "throttle": {"rate": self.throttle_rate, "burst": self.throttle_burst},
            "error_rate": self.error_rate,
            "error_statuses": list(self.error_statuses),
            "drop_connection_rate": self.drop_connection_rate,
            "drop_response_rate": self.drop_response_rate,
            "targets": ["sagemaker.InvokeEndpointAsync"],
            "notifications": {
                "duplicate_rate": self.duplicate_rate,
                "loss_rate": self.loss_rate,
                "malformed_rate": self.malformed_rate,
                "delay": delay,
                "reorder_window_ms": self.reorder_window_ms,
                "early_rate": self.early_rate,
            },
        }

    def emulator_config(self) -> dict[str, Any]:
        """The emulator's configuration file, as plain data."""
        # AWS's defaults (no response in the notifications: each result is fetched from S3), on an
        # emulator that declares only what this matrix names.
        return {
            "extends": "none",
            "seed": self.seed,
            "time_scale": self.time_scale,
            "buckets": ["fanout-output", "fanout-staging"],
            "queues": [QUEUE],
            "topics": [
                {"name": "fanout-success", "subscriptions": [QUEUE]},
                {"name": "fanout-errors", "subscriptions": [QUEUE]},
            ],
            "endpoints": [
                {
                    "name": ENDPOINT,
                    "s3_output_path": "s3://fanout-output/results",
                    "s3_failure_path": "s3://fanout-output/failures",
                    "success_topic": "fanout-success",
                    "error_topic": "fanout-errors",
                    "instance_count": self.instances,
                    "max_concurrent_invocations_per_instance": self.per_instance,
                    "service_time": {"kind": "exponential", "mean_ms": self.service_mean_ms},
                    "model": "default" if self.stall_seconds <= 0 else "benchmarks.faults:stalling_model",
                }
            ],
            "staging": STAGING,
            "faults": self.faults(),
        }

    def cli_options(self) -> list[str]:
        """The options of every ``fanout run`` (after INPUT -o OUTPUT --journal J)."""
        options = ["--endpoint", ENDPOINT, "--tracker", "hybrid", "--payload", "auto", "--staging", STAGING]
        options += ["--request-ttl", str(self.request_ttl), "--json-summary"]
        if self.resume_wait is not None:
            options += ["--resume-wait", f"{self.resume_wait:g}"]
        if self.max_in_flight is not None:
            options += ["--max-in-flight", str(self.max_in_flight)]
        if self.max_pending is not None:
            options += ["--max-pending", str(self.max_pending)]
        return options


QUICK = Plan(requests=10_000, kills=3, run_timeout=600.0, total_timeout=1_800.0)
CI = Plan(requests=2_000, kills=2, run_timeout=240.0, total_timeout=420.0)
"""The size of ``tests/integration/test_fault_matrix.py``."""


def _normal_quantile(p: float) -> float:
    """The standard normal quantile (bisection on erf: exact enough, and no SciPy)."""
    low, high = -10.0, 10.0
    for _ in range(100):
        middle = (low + high) / 2
        if 0.5 * (1 + math.erf(middle / math.sqrt(2))) < p:
            low = middle
        else:
            high = middle
    return (low + high) / 2


async def stalling_model(body: bytes, content_type: str | None, custom_attributes: str | None) -> ModelResult:
    """The emulator's default model, but every worker waits out the stalls first.

    A stall is the first ``<stall>`` seconds of every ``<period>`` of the wall clock (``STALL_ENV``),
    so all workers stop together, the endpoint's queue grows for that long, and the requests that
    wait in it past their (scaled) TTL come back ``expired``: a share set by the stall, not by how
    fast the client happens to send.
    """
    period, stall = _stall()
    if stall > 0:
        phase = time.time() % period
        if phase < stall:
            await anyio.sleep(stall - phase)
    return await default_model(body, content_type, custom_attributes)


def _stall() -> tuple[float, float]:
    period, _, stall = os.environ.get(STALL_ENV, "").partition(",")
    try:
        return max(float(period), 0.001), float(stall)
    except ValueError:
        return 1.0, 0.0


# --- inputs ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Expected:
    """What one input line must come back as."""

    line: int
    kind: Kind
    """``ok``: must succeed with the digest below; ``fail``: the default model fails it."""
    sha256: str
    size: int


_TEXTS = (
    "héllo wörld",
    "naïve café",
    "日本語のテキスト",
    "emoji 🚀✨",
    'quote " and \\ backslash',
    "tab\tand\nnewline",
    "line separator \u2028 and nul \u0000",
    "",
    "plain ascii",
)


def _json_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth >= 3 or roll < 0.35:
        scalar = rng.randrange(6)
        if scalar == 0:
            return rng.choice(_TEXTS) + str(rng.randrange(10**6))
        if scalar == 1:
            return rng.randrange(-(10**12), 10**12)
        if scalar == 2:
            return rng.uniform(-1e6, 1e6)
        if scalar == 3:
            return rng.random() < 0.5
        if scalar == 4:
            return None
        return rng.choice(_TEXTS)
    if roll < 0.55:
        return [_json_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    keys = ("a", "text", "ü", "n", "nested", "list", "値", "x y", "fail_not", "")
    return {rng.choice(keys) + str(k): _json_value(rng, depth + 1) for k in range(rng.randrange(1, 6))}


def _compact(value: Any) -> bytes:
    """The bytes ``fanout run`` sends for a ``body``: compact JSON, UTF-8, not ASCII-escaped."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _exact_size(index: int, size: int) -> dict[str, Any]:
    value: dict[str, Any] = {"i": index, "pad": ""}
    value["pad"] = "y" * (size - len(_compact(value)))
    return value


def make_inputs(path: Path, plan: Plan) -> dict[str, Expected]:
    """Write ``plan.requests`` JSONL lines to ``path``; return, by id, what each must come back as.

    Mixed JSON bodies (objects, arrays, scalars, non-ASCII text), ``"fail": true`` objects,
    ``body_base64`` lines, and bodies over 128,000 bytes (in UTF-8; fewer characters) that go
    through S3, plus bodies of exactly 128,000 bytes that still go inline.
    """
    rng = random.Random(f"{plan.seed}/inputs")
    expected: dict[str, Expected] = {}
    with path.open("w", encoding="utf-8") as out:
        for index in range(plan.requests):
            request_id = f"r{index:07d}-{rng.randrange(16**6):06x}"
            line: dict[str, Any] = {"id": request_id}
            kind: Kind = "ok"
            roll = rng.random()
            raw_utf8 = False
            if plan.big_every and index % plan.big_every == plan.big_every // 2:
                # 2 UTF-8 bytes per "é": over the byte limit with fewer characters than bytes
                body: Any = {"i": index, "pad": "é" * (INLINE_LIMIT // 2 + 50 + rng.randrange(500))}
                line["body"] = body
                data = _compact(body)
                raw_utf8 = True  # written as UTF-8, not as \u00e9 escapes (6 bytes each)
            elif plan.big_every and index % plan.big_every == plan.big_every - 1:
                body = _exact_size(index, INLINE_LIMIT)
                line["body"] = body
                data = _compact(body)
            elif roll < plan.fail_share:
                kind = "fail"
                body = {"fail": True, "reason": request_id, "i": index}
                line["body"] = body
                data = _compact(body)
            elif roll < plan.fail_share + plan.base64_share:
                data = rng.randbytes(rng.randrange(1, 600))
                line["body_base64"] = base64.b64encode(data).decode("ascii")
                line["content_type"] = "application/octet-stream"
            else:
                body = {"i": index, "value": _json_value(rng)} if rng.random() < 0.8 else _json_value(rng)
                if body == "":
                    body = "empty"
                line["body"] = body
                data = _compact(json.loads(json.dumps(body)))
            expected[request_id] = Expected(index + 1, kind, hashlib.sha256(data).hexdigest(), len(data))
            out.write(json.dumps(line, ensure_ascii=not raw_utf8) + "\n")
    return expected


# --- checking the output ---------------------------------------------------------------------------


@dataclass(slots=True)
class Check:
    """The output joined to the input on ``id``."""

    lines: int = 0
    lost: int = 0
    duplicated: int = 0
    wrong: int = 0
    missing: int = 0
    unparseable: int = 0
    unknown_ids: int = 0
    wrong_failures: int = 0
    """Failed lines whose ``failure_reason`` names another request (the model puts the id in it)."""
    statuses: Counter[str] = field(default_factory=Counter)
    expired_reasons: Counter[str] = field(default_factory=Counter)
    unexpected: Counter[str] = field(default_factory=Counter)
    """Lines with another status than their input asks for, besides ``expired``: by status and reason."""
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.duplicated
            or self.wrong
            or self.missing
            or self.unparseable
            or self.unknown_ids
            or self.wrong_failures
        )

    def example(self, kind: str, text: str) -> None:
        kept = self.examples.setdefault(kind, [])
        if len(kept) < EXAMPLES:
            kept.append(text if len(text) <= 600 else text[:600] + "…")


_ID = re.compile(r"r\d{7}-[0-9a-f]{6}")
"""The ids ``make_inputs`` writes; a ``fail`` body's ``reason`` is its own id."""


def _reason_class(reason: object) -> str:
    text = str(reason or "")
    if text.startswith("in doubt"):
        return "in doubt (no 202, no notification)"
    if "RequestTTLSeconds" in text or text.startswith("Request expired"):
        return "TTL (expired in the endpoint queue)"
    return text[:80] or "(no reason)"


def check_output(path: Path, expected: Mapping[str, Expected]) -> Check:
    """Join the output lines to ``expected`` on ``id`` and count what is lost, duplicated or wrong."""
    check = Check()
    seen: Counter[str] = Counter()
    with path.open("rb") if path.exists() else _empty() as source:
        for number, raw in enumerate(source, start=1):
            check.lines += 1
            try:
                record = json.loads(raw)
                request_id = record["id"]
                status = record["status"]
            except (ValueError, KeyError, TypeError):
                check.unparseable += 1
                check.example("unparseable", f"output line {number}: {raw[:300]!r}")
                continue
            want = expected.get(request_id) if isinstance(request_id, str) else None
            if want is None:
                check.unknown_ids += 1
                check.example("unknown_ids", raw.decode(errors="replace").strip())
                continue
            seen[request_id] += 1
            check.statuses[str(status)] += 1
            text = raw.decode(errors="replace").strip()
            if seen[request_id] == 2:
                check.duplicated += 1
                check.example("duplicated", f"{request_id} (output line {number}): {text}")
            reason = record.get("failure_reason")
            if status == "expired":
                check.expired_reasons[_reason_class(reason)] += 1
            elif status != ("succeeded" if want.kind == "ok" else "failed"):
                key = f"{want.kind} line {status}: {_reason_class(reason)}"
                check.unexpected[key] += 1
                check.example(f"unexpected ({key})", text)
            if status == "succeeded":
                result = record.get("result")
                if result is None:
                    check.missing += 1
                    check.example("missing", text)
                elif not isinstance(result, dict) or result.get("sha256") != want.sha256:
                    check.wrong += 1
                    check.example("wrong", f"{text} (expected sha256 {want.sha256}, {want.size} bytes)")
            elif status == "failed" and want.kind == "fail":
                named = set(_ID.findall(str(reason or "")))
                if named and request_id not in named:
                    check.wrong_failures += 1
                    check.example("wrong_failures", text)
    for request_id, want in expected.items():
        if not seen[request_id]:
            check.lost += 1
            check.example("lost", f"{request_id} (input line {want.line}, {want.kind}, {want.size} bytes)")
    return check


@contextmanager
def _empty() -> Iterator[list[bytes]]:
    yield []


# --- running fanout --------------------------------------------------------------------------------


@dataclass(slots=True)
class RunRecord:
    """One ``fanout run``: how it ended and what it said."""

    index: int
    ended: Literal["killed", "exited", "timed out"]
    seconds: float
    lines_at_start: int
    lines_at_end: int
    kill_threshold: int | None = None
    exit_code: int | None = None
    summary: dict[str, Any] | None = None
    stderr_tail: str = ""

    @property
    def completed(self) -> bool:
        """It exited 0 or 1 and printed its JSON summary: the whole input is done."""
        return self.ended == "exited" and self.exit_code in (0, 1) and self.summary is not None


FANOUT = (sys.executable, "-m", "fanout._cli")
"""The ``fanout`` command (its console script's entry point), run with this interpreter."""


def _cli_env(emulator: Mapping[str, str]) -> dict[str, str]:
    """This environment without AWS_* and FANOUT_* settings, pointed at the emulator."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FANOUT_"))}
    env.update(
        AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null", AWS_EC2_METADATA_DISABLED="true"
    )
    env.update(emulator)
    env.setdefault("AWS_DEFAULT_REGION", emulator.get("AWS_REGION", "us-east-1"))
    return env


class _LineCounter:
    """Counts the newlines of a growing file incrementally (and from scratch when it shrinks)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self.count = 0

    def update(self) -> int:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            self._offset = self.count = 0
            return 0
        if size < self._offset:
            self._offset = self.count = 0
        if size > self._offset:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read(size - self._offset)
            self.count += chunk.count(b"\n")
            self._offset += len(chunk)
        return self.count


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        data: dict[str, Any] = json.load(response)
    return data


class _Sampler:
    """Polls the emulator's stats every ``interval`` seconds in a thread: peak backlog, expiries."""

    def __init__(self, url: str, interval: float = 1.0) -> None:
        self._url = url
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stats-sampler", daemon=True)
        self.peak_backlog = 0
        self.timeline: list[list[float]] = []
        """[seconds, invokes accepted, invokes throttled, endpoint backlog, expired] per sample."""
        self._started = time.monotonic()

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                stats = _get_json(self._url)
            except OSError:
                continue
            backlog = sum(e.get("backlog", 0) for e in stats.get("endpoints", {}).values())
            self.peak_backlog = max(self.peak_backlog, int(backlog))
            invocations = stats.get("invocations", {})
            self.timeline.append(
                [
                    round(time.monotonic() - self._started, 2),
                    invocations.get("accepted", 0),
                    stats.get("faults", {}).get("throttled", 0),
                    backlog,
                    invocations.get("expired", 0),
                ]
            )


class _Runner:
    """Runs ``fanout run`` over and over in ``workdir`` against one emulator."""

    def __init__(self, plan: Plan, workdir: Path, env: Mapping[str, str], log: Any) -> None:
        self.plan = plan
        self.workdir = workdir
        self.env = _cli_env(env)
        self.output = workdir / "out.jsonl"
        self.counter = _LineCounter(self.output)
        self.command = [
            *FANOUT,
            "run",
            str(workdir / "in.jsonl"),
            "-o",
            str(self.output),
            "--journal",
            str(workdir / "journal.db"),
            *plan.cli_options(),
        ]
        self.runs: list[RunRecord] = []
        self._log = log

    def run(self, threshold: int | None, jitter: float, deadline: float) -> RunRecord:
        """One run: killed with SIGKILL once the output has ``threshold`` lines (+ ``jitter`` s)."""
        index = len(self.runs) + 1
        stderr_path = self.workdir / f"run-{index:02d}.stderr"
        start_lines = self.counter.update()
        started = time.monotonic()
        limit = min(deadline, started + self.plan.run_timeout)
        ended: Literal["killed", "exited", "timed out"] = "exited"
        with stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                self.command, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
            )
            try:
                kill_at: float | None = None
                while process.poll() is None:
                    now = time.monotonic()
                    if now >= limit:
                        ended = "timed out"
                        break
                    if kill_at is None and threshold is not None and self.counter.update() >= threshold:
                        kill_at = now + jitter
                    if kill_at is not None and now >= kill_at:
                        ended = "killed"
                        break
                    time.sleep(0.01)
            finally:
                if process.poll() is None:
                    process.send_signal(signal.SIGKILL)
                elif ended == "killed":
                    ended = "exited"  # it finished by itself just before the kill
                process.wait(timeout=30)
        text = stderr_path.read_text(encoding="utf-8", errors="replace")
        record = RunRecord(
            index=index,
            ended=ended,
            seconds=time.monotonic() - started,
            lines_at_start=start_lines,
            lines_at_end=self.counter.update(),
            kill_threshold=threshold,
            exit_code=None if ended != "exited" else process.returncode,
            summary=json_summary(text) if ended == "exited" else None,
            stderr_tail=text[-3000:],
        )
        self.runs.append(record)
        self._log(
            f"run {index}: {record.ended}"
            + (f" (exit {record.exit_code})" if record.exit_code is not None else "")
            + f" after {record.seconds:.1f} s, output {record.lines_at_start:,} → {record.lines_at_end:,}"
        )
        return record


# --- the matrix ------------------------------------------------------------------------------------


@dataclass(slots=True)
class MatrixResult:
    plan: Plan
    check: Check
    runs: list[RunRecord]
    kills: int
    finished: bool
    """The last run exited 0 or 1 with its summary: the whole input was done."""
    wall: float
    stats: dict[str, Any]
    peak_backlog: int
    timeline: list[list[float]]
    """The emulator sampled each second: [seconds, accepted, throttled, backlog, expired]."""
    workdir: Path | None
    """Kept (input, output, journal, each run's stderr) when the matrix failed."""
    errors: list[str] = field(default_factory=list)
    """What stopped the matrix early (a run that hung, a usage error)."""

    @property
    def ok(self) -> bool:
        return self.check.ok and self.finished and not self.errors

    @property
    def resumes(self) -> int:
        return max(0, len(self.runs) - 1)

    @property
    def resends(self) -> int | None:
        """Re-sends from the summaries of the runs that finished (``this_run.resends``); None if absent."""
        values = [
            r.summary["this_run"]["resends"]
            for r in self.runs
            if r.summary
            and isinstance(r.summary.get("this_run"), dict)
            and "resends" in r.summary["this_run"]
        ]
        return sum(int(v) for v in values) if values else None

    def shares(self) -> dict[str, tuple[float, float | None, str]]:
        """Per fault: (configured share, measured share or None, what the measured share is over)."""
        stats = self.stats
        invokes = stats.get("requests", {}).get("sagemaker.InvokeEndpointAsync", {})
        total = sum(invokes.values())
        faults = stats.get("faults", {})
        notes = stats.get("notifications", {})
        accepted = stats.get("invocations", {}).get("accepted", 0)
        published = notes.get("published", 0)
        delivered = notes.get("delivered", 0)
        plan = self.plan

        def share(count: Any, over: Any) -> float | None:
            return count / over if isinstance(count, int | float) and over else None

        return {
            "throttled invokes": (
                math.nan,
                share(faults.get("throttled"), total),
                f"of {total:,} InvokeEndpointAsync calls",
            ),
            "5xx": (plan.error_rate, share(faults.get("errors_5xx"), total), "of invokes"),
            "connection reset before handling": (
                plan.drop_connection_rate,
                share(faults.get("dropped_connections"), total),
                "of invokes",
            ),
            "connection reset after the 202 (lost 202)": (
                plan.drop_response_rate,
                share(faults.get("dropped_responses"), total),
                "of invokes",
            ),
            "notification duplicated": (
                plan.duplicate_rate,
                share(notes.get("duplicated"), published),
                f"of {published:,} published",
            ),
            "notification lost": (plan.loss_rate, share(notes.get("lost"), published), "of published"),
            "notification malformed": (
                plan.malformed_rate,
                share(notes.get("malformed"), published),
                "of published",
            ),
            "notification delayed (any delay > 0)": (
                math.nan,
                share(notes.get("delayed"), delivered),
                f"of {delivered:,} deliveries",
            ),
            "notification before the 202 (early)": (
                plan.early_rate,
                share(notes.get("early"), accepted),
                f"of {accepted:,} accepted",
            ),
            "expired in the endpoint queue (TTL)": (
                math.nan,
                share(stats.get("invocations", {}).get("expired"), accepted),
                "of accepted",
            ),
        }

    def to_dict(self) -> dict[str, Any]:
        check = self.check
        return {
            "ok": self.ok,
            "plan": asdict(self.plan),
            "requests": self.plan.requests,
            "kills": self.kills,
            "resumes": self.resumes,
            "finished": self.finished,
            "lost": check.lost,
            "duplicated": check.duplicated,
            "wrong": check.wrong,
            "missing": check.missing,
            "unparseable": check.unparseable,
            "unknown_ids": check.unknown_ids,
            "output_lines": check.lines,
            "statuses": dict(check.statuses),
            "expired_reasons": dict(check.expired_reasons),
            "wrong_failures": check.wrong_failures,
            "unexpected": dict(check.unexpected),
            "resends": self.resends,
            "duplicate_inference_ids": self.stats.get("duplicate_inference_ids"),
            "shares": {
                name: {"configured": None if math.isnan(c) else c, "measured": m, "over": over}
                for name, (c, m, over) in self.shares().items()
            },
            "peak_backlog": self.peak_backlog,
            "timeline": self.timeline,
            "wall_seconds": self.wall,
            "runs": [asdict(r) | {"stderr_tail": r.stderr_tail[-500:]} for r in self.runs],
            "examples": check.examples,
            "errors": self.errors,
            "emulator_stats": self.stats,
            "workdir": str(self.workdir) if self.workdir else None,
        }


def run_matrix(plan: Plan, *, workdir: Path | None = None, log: Any = None) -> MatrixResult:
    """Run the whole matrix once. The work folder is removed afterwards unless the matrix failed."""

    def say(message: str) -> None:
        if log is not None:
            log(message)

    config = plan.emulator_config()
    config_from_dict(config)  # a bad plan fails here, not in the emulator process
    own_dir = workdir is None
    folder = Path(tempfile.mkdtemp(prefix="fanout-faults-")) if workdir is None else workdir
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{plan.seed}/kills")
    thresholds = sorted(max(1, math.ceil(plan.requests * rng.uniform(0.03, 0.97))) for _ in range(plan.kills))
    jitters = [rng.uniform(0.0, 0.25) for _ in range(plan.kills)]
    started = time.monotonic()
    deadline = started + plan.total_timeout
    errors: list[str] = []
    try:
        say(f"writing {plan.requests:,} requests to {folder / 'in.jsonl'}")
        expected = make_inputs(folder / "in.jsonl", plan)
        (folder / "emulator.json").write_text(json.dumps(config), encoding="utf-8")
        # the emulator imports ``stalling_model`` from this checkout and reads the stall from its env
        python_path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        emulator_env = {"PYTHONPATH": python_path, STALL_ENV: f"{plan.stall_period:g},{plan.stall_seconds:g}"}
        with ExitStack() as stack:
            with aws_environment(emulator_env):  # only while the emulator process starts
                env = stack.enter_context(run_emulator_process(folder / "emulator.json"))
            stats_url = env["AWS_ENDPOINT_URL"] + "/_fanout/stats"
            runner = _Runner(plan, folder, env, say)
            with _Sampler(stats_url) as sampler:
                kills = 0
                for threshold, jitter in zip(thresholds, jitters, strict=True):
                    record = runner.run(threshold, jitter, deadline)
                    if record.ended == "killed":
                        kills += 1
                    elif record.completed or record.ended == "timed out" or record.exit_code == 2:
                        break
                    # else it aborted or crashed by itself (an error, below); the next run resumes
                final_runs = 0
                while (
                    not (runner.runs and runner.runs[-1].completed)
                    and final_runs < plan.max_final_runs
                    and time.monotonic() < deadline
                    and not (runner.runs and runner.runs[-1].ended == "timed out")
                    and not (runner.runs and runner.runs[-1].exit_code == 2)
                ):
                    runner.run(None, 0.0, deadline)
                    final_runs += 1
                finished = bool(runner.runs) and runner.runs[-1].completed
                # the emulator's counters settle once the last delayed notifications are out
                time.sleep(0.5)
                stats = _get_json(stats_url)
            for record in runner.runs:
                if record.ended == "timed out":
                    errors.append(
                        f"run {record.index} did not finish within {plan.run_timeout:g} s "
                        f"(or the matrix's {plan.total_timeout:g} s); it was killed. stderr tail: "
                        f"{record.stderr_tail[-500:]!r}"
                    )
                elif record.ended == "exited" and not record.completed:
                    what = "aborted by itself" if record.exit_code == 3 else "crashed"
                    errors.append(
                        f"run {record.index} {what}: exit code {record.exit_code} without a summary line; "
                        f"stderr tail: {record.stderr_tail[-500:]!r}"
                    )
            if not finished and not errors:
                errors.append(f"no run finished the input within {len(runner.runs)} runs")
        check = check_output(folder / "out.jsonl", expected)
        result = MatrixResult(
            plan=plan,
            check=check,
            runs=runner.runs,
            kills=kills,
            finished=finished,
            wall=time.monotonic() - started,
            stats=stats,
            peak_backlog=sampler.peak_backlog,
            timeline=sampler.timeline,
            workdir=None,
            errors=errors,
        )
    except BaseException:
        say(f"the matrix stopped with an error; its files are in {folder}")
        raise
    if result.ok and own_dir:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        result.workdir = folder
    return result


# --- the report ------------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value * 100:.2f} %"


def _setup(plan: Plan) -> dict[str, str]:
    return {
        "target": "the emulator (python -m fanout.testing) in its own process; fanout run in another; "
        "neither pinned",
        "size": f"{plan.requests:,} requests, {plan.kills} SIGKILLs, seed {plan.seed}",
        "fanout run options": " ".join(plan.cli_options()),
        "throttle": f"token bucket {plan.throttle_rate:g} invokes/s, burst {plan.throttle_burst:g}",
        "5xx": f"{plan.error_rate:.0%} of invokes, status {', '.join(str(s) for s in plan.error_statuses)}",
        "connection resets": f"{plan.drop_connection_rate:.0%} before handling, "
        f"{plan.drop_response_rate:.0%} after the 202 (drop_response_rate)",
        "notifications": f"{plan.duplicate_rate:.0%} duplicated, {plan.loss_rate:.0%} lost, "
        f"{plan.malformed_rate:.0%} malformed, {plan.early_rate:.0%} before the 202 (early_rate); "
        f"a lognormal delay (σ {plan.delay_sigma:g}) over {plan.delayed_over_ms:g} ms for "
        f"{plan.delayed_share:.0%} of deliveries, plus 0–{plan.reorder_window_ms:g} ms on each (reordering)",
        "endpoint": f"{plan.instances} × {plan.per_instance} workers, exponential service time of mean "
        f"{plan.service_mean_ms:g} ms; every {plan.stall_period:g} s all workers stall for "
        f"{plan.stall_seconds:g} s; time_scale {plan.time_scale:g}, so --request-ttl {plan.request_ttl} "
        f"expires after {plan.ttl_seconds * 1000:.0f} ms in the queue",
        "inputs": f'{plan.fail_share:.0%} "fail": true, {plan.base64_share:.0%} body_base64, one in '
        f"{plan.big_every} over 128,000 bytes in UTF-8 (S3 via --payload auto) and one in "
        f"{plan.big_every} of exactly 128,000 bytes (inline), the rest mixed JSON with non-ASCII text",
    }


def to_markdown(result: MatrixResult, command: str) -> str:
    plan, check = result.plan, result.check
    verdict = "PASS" if result.ok else "FAIL"
    headline = (
        f"**{verdict}**: {check.lost:,} lines lost, {check.duplicated:,} duplicated, {check.wrong:,} wrong "
        f"results, {check.missing:,} missing results, over {plan.requests:,} requests, {result.kills} "
        f"SIGKILLs and {result.resumes} resumes, in {result.wall:,.0f} s."
    )
    out = header(
        "Fault matrix: fanout run under every fault, killed and resumed",
        command,
        _setup(plan),
        preamble="The real `fanout run --journal` against the emulator with every fault on, killed with "
        "SIGKILL at random moments and rerun with the same command until it finished; then its output "
        "joined to its input on `id`. How the kills are drawn, and why the throttled share is what it "
        "is: `benchmarks/faults.py`.",
        headlines=[headline],
    )
    summary = Table(["", "value", "goal"], title="Result")
    summary.add("requests (input lines)", f"{plan.requests:,}", "")
    summary.add("output lines", f"{check.lines:,}", f"{plan.requests:,}")
    summary.add("SIGKILLs", result.kills, f"{plan.kills} scheduled")
    summary.add("resumes (runs after the first)", result.resumes, "")
    summary.add("**lines lost**", f"**{check.lost:,}**", "0")
    summary.add("**lines duplicated**", f"**{check.duplicated:,}**", "0")
    summary.add("**wrong results**", f"**{check.wrong:,}**", "0")
    summary.add("**missing results**", f"**{check.missing:,}**", "0")
    summary.add("unparseable output lines", check.unparseable, "0")
    summary.add("output lines with an id not in the input", check.unknown_ids, "0")
    summary.add("failed lines whose reason names another request", check.wrong_failures, "0")
    summary.add(
        "lines with an unexpected status (besides expired)", f"{sum(check.unexpected.values()):,}", ""
    )
    summary.add(
        "re-sends (`this_run.resends` of the runs that finished; killed runs print no summary)",
        "not reported" if result.resends is None else f"{result.resends:,}",
        "",
    )
    summary.add(
        "inference ids received twice (emulator `duplicate_inference_ids`, all runs)",
        result.stats.get("duplicate_inference_ids"),
        "",
    )
    summary.add("peak endpoint backlog (sampled each second)", f"{result.peak_backlog:,}", "")
    summary.add("wall time", f"{result.wall:,.1f} s", "")
    out += [summary.to_markdown(), ""]
    statuses = Table(["status", "lines"], title="Status counts (every output line)")
    for status, count in sorted(check.statuses.items()):
        statuses.add(status, f"{count:,}")
    out += [statuses.to_markdown(), ""]
    if check.expired_reasons:
        expired = Table(["reason", "lines"], title="Expired, by reason")
        for reason, count in check.expired_reasons.most_common():
            expired.add(reason, f"{count:,}")
        out += [expired.to_markdown(), ""]
    if check.unexpected:
        unexpected = Table(
            ["input, status: reason", "lines"],
            title="Unexpected statuses (ok lines should succeed and fail lines fail), by reason",
        )
        for reason, count in check.unexpected.most_common():
            unexpected.add(reason, f"{count:,}")
        out += [unexpected.to_markdown(), ""]
    shares = Table(["fault", "configured", "measured", "over"])
    for name, (configured, measured, over) in result.shares().items():
        shares.add(name, _pct(configured), _pct(measured), over)
    out += ["## Faults: configured and measured", "", shares.to_markdown(), ""]
    runs = Table(["run", "ended", "seconds", "output lines before → after", "kill threshold", "exit"])
    for r in result.runs:
        runs.add(
            r.index,
            r.ended,
            f"{r.seconds:.1f}",
            f"{r.lines_at_start:,} → {r.lines_at_end:,}",
            "–" if r.kill_threshold is None else f"{r.kill_threshold:,}",
            "–" if r.exit_code is None else r.exit_code,
        )
    out += ["## Runs", "", runs.to_markdown(), ""]
    stats = result.stats
    counters: dict[str, Any] = {
        key: stats.get(key)
        for key in ("faults", "notifications", "invocations", "duplicate_inference_ids")
        if key in stats
    }
    counters["InvokeEndpointAsync"] = stats.get("requests", {}).get("sagemaker.InvokeEndpointAsync")
    out += ["## Emulator counters", "", "```json", json.dumps(counters, indent=1), "```", ""]
    if result.errors or check.examples:
        out += ["## Problems", ""]
        out += [f"- {e}" for e in result.errors]
        for kind, examples in check.examples.items():
            out += ["", f"**{kind}** (first {len(examples)})", "", "```", *examples, "```"]
        out += [""]
    if result.workdir is not None:
        out += [f"Input, output, journal and each run's stderr are kept in `{result.workdir}`.", ""]
    return "\n".join(out).rstrip() + "\n"


def _print_table(result: MatrixResult) -> None:
    check = result.check
    rows = [
        ("requests", f"{result.plan.requests:,}"),
        ("kills", str(result.kills)),
        ("resumes", str(result.resumes)),
        ("lines lost", f"{check.lost:,}"),
        ("lines duplicated", f"{check.duplicated:,}"),
        ("wrong results", f"{check.wrong:,}"),
        ("missing results", f"{check.missing:,}"),
        ("unparseable / unknown ids", f"{check.unparseable:,} / {check.unknown_ids:,}"),
        ("statuses", ", ".join(f"{s} {n:,}" for s, n in sorted(check.statuses.items()))),
        ("expired by reason", ", ".join(f"{r}: {n:,}" for r, n in check.expired_reasons.items()) or "–"),
        ("unexpected statuses", ", ".join(f"{r}: {n:,}" for r, n in check.unexpected.items()) or "–"),
        ("wrong failure reasons", f"{check.wrong_failures:,}"),
        ("re-sends (summaries)", "not reported" if result.resends is None else f"{result.resends:,}"),
        ("duplicate_inference_ids", str(result.stats.get("duplicate_inference_ids"))),
        ("wall time", f"{result.wall:,.1f} s"),
    ]
    rows += [(name, f"{_pct(m)} (configured {_pct(c)})") for name, (c, m, _) in result.shares().items()]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    for error in result.errors:
        print(f"error: {error}")
    for kind, examples in result.check.examples.items():
        print(f"{kind}:")
        for example in examples:
            print(f"  {example}")
    print("PASS" if result.ok else "FAIL")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.faults",
        description="Kill fanout run with SIGKILL under every emulator fault, resume it, and check that "
        "no line is lost, duplicated or wrong.",
    )
    parser.add_argument("--requests", type=int, default=None, help="input lines (default 100,000)")
    parser.add_argument("--kills", type=int, default=None, help="SIGKILLs, each then resumed (default 10)")
    parser.add_argument("--seed", type=int, default=1, help="seeds the inputs, the kills and the emulator")
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK.requests:,} requests, {QUICK.kills} kills"
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"report folder (default {RESULTS})")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the input, output and journal here")
    parser.add_argument("--resume-wait", type=float, default=None, help="passed to fanout run")
    parser.add_argument("--throttle-rate", type=float, default=None, help="token bucket rate, invokes/s")
    parser.add_argument("--throttle-burst", type=float, default=None, help="token bucket burst")
    parser.add_argument("--service-mean-ms", type=float, default=None, help="mean service time per worker")
    parser.add_argument("--time-scale", type=float, default=None, help="the emulator's time_scale")
    parser.add_argument("--timeout", type=float, default=None, help="seconds for the whole matrix")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    plan = QUICK if args.quick else Plan()
    changes: dict[str, Any] = {"seed": args.seed}
    if args.requests is not None:
        if args.requests < 1:
            raise SystemExit("--requests must be 1 or more")
        changes["requests"] = args.requests
    if args.kills is not None:
        if args.kills < 0:
            raise SystemExit("--kills must be 0 or more")
        changes["kills"] = args.kills
    if args.resume_wait is not None:
        changes["resume_wait"] = args.resume_wait
    if args.throttle_rate is not None:
        changes["throttle_rate"] = args.throttle_rate
    if args.throttle_burst is not None:
        changes["throttle_burst"] = args.throttle_burst
    if args.service_mean_ms is not None:
        changes["service_mean_ms"] = args.service_mean_ms
    if args.time_scale is not None:
        changes["time_scale"] = args.time_scale
    if args.timeout is not None:
        changes["total_timeout"] = args.timeout
    plan = replace(plan, **changes)

    def log(message: str) -> None:
        print(f"  {message}", file=sys.stderr, flush=True)

    result = run_matrix(plan, workdir=args.workdir, log=log)
    command = command_line("python -m benchmarks.faults", argv)
    _print_table(result)
    path = write_report(
        args.output / "faults.md", to_markdown(result, command), {"command": command, **result.to_dict()}
    )
    print(f"wrote {path} and {path.with_suffix('.json')}", file=sys.stderr)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
