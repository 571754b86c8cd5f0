"""``fanout run -vv --log-format json``: every record is one JSON object, and none carries a secret.

A verbose run, in one process and with workers, against the emulator: payloads and a session
token carry marker strings, and the lines' results are known. No log line may contain a marker,
a result, the secret key, or any part of a signature.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from fanout.testing import run_emulator_process
from tests.integration.cli_support import cli_env, control, read_outputs, run, write_lines

PAYLOAD_MARKER = "payload-marker-6b1f0c"
TOKEN_MARKER = "session-token-marker-93d2e1"
FORBIDDEN = ("AWS4-HMAC-SHA256", "Signature=", "Credential=", "X-Amz-Security-Token", "Authorization")


@pytest.fixture(scope="module")
def emulator() -> Iterator[dict[str, str]]:
    with run_emulator_process() as env:
        yield env


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_verbose_run_logs_json_lines_without_payloads_results_or_credentials(
    emulator: dict[str, str], tmp_path: Path, workers: str
) -> None:
    # A quarter of the invokes fail with a 5xx: some retries, to be logged, in every run (0.75^62 ≈ 2e-8).
    control(emulator, "/_fanout/faults", {"error_rate": 0.25, "targets": ["sagemaker"]})
    lines: list[object] = [{"id": f"r{n}", "body": {"text": f"{PAYLOAD_MARKER} {n}"}} for n in range(60)]
    lines += [
        f'{{"id": "broken", "body": "{PAYLOAD_MARKER}',  # malformed: rejected, and its reason logged
        {"id": "fails", "body": {"fail": True, "reason": "r-fails", "text": PAYLOAD_MARKER}},
        {"id": "too-big", "body": {"pad": PAYLOAD_MARKER * 12_000}},
    ]
    write_lines(tmp_path / "in.jsonl", lines)
    env = cli_env(emulator, AWS_SESSION_TOKEN=TOKEN_MARKER)
    args = [str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "-vv", "--log-format", "json"]
    result = run(env, *args, "--quiet", "--payload", "inline", "--workers", workers)
    assert result.returncode == 1, result.stderr.decode()

    records = [json.loads(line) for line in result.stderr.decode().splitlines()]
    assert {record["logger"] for record in records} >= {"fanout.run", "fanout.dispatch", "fanout.client"}
    assert {record["level"] for record in records} >= {"INFO", "DEBUG"}
    assert all({"time", "level", "logger", "message"} <= set(record) for record in records)
    rejected = [record for record in records if record["message"].startswith("rejected too-big")]
    assert rejected and rejected[0]["id"] == "too-big"  # a rejection names the line, not its body
    assert any(record["message"].startswith("retrying after a transient error") for record in records)

    outputs = read_outputs(tmp_path / "out.jsonl")
    results = [json.dumps(record["result"]) for record in outputs if record["result"] is not None]
    sha256s = [record["result"]["sha256"] for record in outputs if record["result"] is not None]
    assert len(sha256s) == 60
    text = result.stderr.decode()
    for secret in (PAYLOAD_MARKER, TOKEN_MARKER, emulator["AWS_SECRET_ACCESS_KEY"], *FORBIDDEN, *sha256s):
        assert secret not in text, secret
    assert not [result for result in results if result in text]
