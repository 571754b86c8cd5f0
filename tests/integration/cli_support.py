"""What the ``fanout run`` integration tests share: running the CLI as a subprocess against the
emulator, a batch of mixed lines whose results are known, and the check that each line has one
output carrying its own result."""

from __future__ import annotations

import base64
import collections
import hashlib
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

__all__ = [
    "FAULTS",
    "RUN_TIMEOUT",
    "check_results",
    "cli_env",
    "command",
    "control",
    "mixed_batch",
    "read_outputs",
    "run",
    "write_lines",
]

RUN_TIMEOUT = 120

FAULTS: dict[str, Any] = {
    "throttle": {"rate": 400, "burst": 40},
    "error_rate": 0.03,
    "drop_connection_rate": 0.02,
    "targets": ["sagemaker"],
    "notifications": {
        "duplicate_rate": 0.1,
        "delay": {"kind": "uniform", "low_ms": 0, "high_ms": 30},
        "reorder_window_ms": 20,
        "early_rate": 0.2,
    },
}


def control(env: dict[str, str], path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        env["AWS_ENDPOINT_URL"] + path, data=data, method="GET" if body is None else "PUT"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        result: dict[str, Any] = json.load(response)
    return result


def cli_env(emulator_env: dict[str, str], **overrides: str | None) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "FANOUT_")) and name != "PYTHONHASHSEED"
    }
    env.update(
        AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null", AWS_EC2_METADATA_DISABLED="true"
    )
    env.update(emulator_env)
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "fanout._cli", "run", *args]


def run(env: dict[str, str], *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(command(*args), env=env, input=stdin, capture_output=True, timeout=RUN_TIMEOUT)


def read_outputs(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def write_lines(path: Path, lines: list[Any]) -> None:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))


def mixed_batch(count: int) -> tuple[list[Any], dict[str, bytes | None]]:
    """Lines and, per id, the bytes the endpoint will see (None: the line must fail)."""
    lines: list[Any] = []
    payloads: dict[str, bytes | None] = {}
    for index in range(count):
        request_id = f"r{index}"
        if index % 25 == 3:
            lines.append({"id": request_id, "body": {"fail": True, "reason": request_id}})
            payloads[request_id] = None
        elif index % 40 == 7:
            value = {"big": "y" * 130_000, "i": index}
            lines.append({"id": request_id, "body": value})
            payloads[request_id] = json.dumps(value, separators=(",", ":")).encode()
        elif index % 10 == 1:
            raw = os.urandom(64)
            lines.append(
                {"id": request_id, "body_base64": base64.b64encode(raw).decode(), "content_type": "x/y"}
            )
            payloads[request_id] = raw
        else:
            value = {"i": index, "text": f"héllo {index}"}
            lines.append({"id": request_id, "body": value})
            payloads[request_id] = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    return lines, payloads


def check_results(outputs: list[dict[str, Any]], payloads: dict[str, bytes | None]) -> None:
    ids = collections.Counter(record["id"] for record in outputs)
    assert set(ids) == set(payloads)
    assert max(ids.values()) == 1
    for record in outputs:
        expected = payloads[record["id"]]
        if record["status"] == "expired":
            continue  # the tests that allow it check it
        if expected is None:
            assert record["status"] == "failed"
            assert record["id"] in record["failure_reason"]
            continue
        assert record["status"] == "succeeded", record
        assert record["result"]["sha256"] == hashlib.sha256(expected).hexdigest()
        assert record["payload"] == ("s3" if len(expected) > 128_000 else "inline")
