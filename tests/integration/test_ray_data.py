"""``fanout.ray.Scorer`` in Ray Data pipelines against the emulator (in its own process, on loopback).

One local Ray (``local_ray``, two CPUs) serves the whole session. Its actors get the emulator's
AWS variables through ``runtime_env``, as a user's would get theirs. Every input row comes back
exactly once, with the result of its own request (the emulator's model answers the sha256 of the
bytes it was sent); bad rows come back ``rejected``; a run-level error fails the dataset. A few
tests call the ``Scorer`` directly on an in-process emulator, without Ray, to reach the corners
cheaply.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray", reason="needs Ray: pip install 'fanout[ray]'")

import anyio
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from fanout import ConfigError, S3Tracking, SqsTracking
from fanout._jsonl import OUTPUT_FIELDS
from fanout._models import encode_json
from fanout.ray import OUTPUT_SCHEMA, Scorer
from fanout.testing import aws_environment, open_emulator, run_emulator_process

# Ray warns about its own defaults (DataContext's deprecated fields) whenever it copies one
pytestmark = [
    pytest.mark.filterwarnings(r"ignore::DeprecationWarning:ray\."),
    pytest.mark.filterwarnings(r"ignore::FutureWarning:ray\."),
]

ENDPOINT = "fanout-demo"
EXTENSION = re.compile(r"^s3://fanout-output/results/fanout/[0-9a-f]{32}/000000/[^/]+\.out$")


@pytest.fixture(scope="module")
def emulator_env() -> Iterator[dict[str, str]]:
    with run_emulator_process() as env:
        yield env


def _rows() -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    """Rows of every kind, and the bytes each good row must send."""
    rows: list[dict[str, Any]] = []
    sent: dict[str, bytes] = {}
    for n in range(240):
        body = {"n": n, "text": "é" * (n % 5)}
        rows.append({"id": f"json-{n}", "body": body})
        sent[f"json-{n}"] = encode_json(body)
    for n in range(40):
        raw = hashlib.sha256(str(n).encode()).digest() * 3
        rows.append({"id": f"raw-{n}", "body_base64": base64.b64encode(raw).decode()})
        sent[f"raw-{n}"] = raw
    failing = base64.b64encode(b'{"fail":true,"reason":"boom"}').decode()
    rows.append({"id": "fails", "body_base64": failing})
    rows.append({"id": "no-payload"})
    rows.append({"id": "two-payloads", "body": {"n": -1, "text": ""}, "input_location": "s3://b/k"})
    rows.append({"id": "bad-base64", "body_base64": "not base64!"})
    rows.append({"id": "bad-location", "input_location": "https://example.com/x"})
    return rows, sent


def _check(records: list[dict[str, Any]], sent: dict[str, bytes]) -> None:
    by_id = Counter(record["id"] for record in records)
    assert set(by_id.values()) == {1}, "every row exactly once"
    assert set(by_id) == {*sent, "fails", "no-payload", "two-payloads", "bad-base64", "bad-location"}
    seen = {record["id"]: record for record in records}
    for row_id, body in sent.items():
        record = seen[row_id]
        assert record["status"] == "succeeded", record
        expected = {"sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body)}
        assert json.loads(record["result"]) == expected
        assert record["result_base64"] is None
        assert EXTENSION.match(record["output_location"]), record["output_location"]
    assert seen["fails"]["status"] == "failed"
    assert "boom" in seen["fails"]["failure_reason"]
    assert seen["fails"]["failure_location"].startswith("s3://fanout-output/failures/")
    reasons = {
        "no-payload": "give exactly one of body, body_base64 or input_location",
        "two-payloads": "not body and input_location",
        "bad-base64": "body_base64 is not valid base64",
        "bad-location": "input_location",
    }
    for row_id, words in reasons.items():
        record = seen[row_id]
        assert record["status"] == "rejected" and record["inference_id"] is None
        assert words in record["failure_reason"] and not record["failure_reason"].startswith("line ")


def test_every_row_once_with_its_own_result_on_two_actors(
    local_ray: Any, emulator_env: dict[str, str], tmp_path: Path
) -> None:
    rows, sent = _rows()
    ds = local_ray.data.from_items(rows, override_num_blocks=6)
    out = ds.map_batches(
        Scorer,
        fn_constructor_kwargs={"endpoint_name": ENDPOINT},
        batch_format="pyarrow",
        batch_size=50,
        compute=local_ray.data.ActorPoolStrategy(size=2),
        runtime_env={"env_vars": emulator_env},
    )
    out.write_parquet(str(tmp_path))
    table = pq.read_table(tmp_path)
    assert table.schema.names == OUTPUT_SCHEMA.names
    assert table.schema.field("attempts").type == pa.int64()
    records = table.to_pylist()
    _check(records, sent)
    actors = {record["output_location"].split("/")[5] for record in records if record["output_location"]}
    assert len(actors) == 2, "each actor writes under its own S3OutputPathExtension"


def test_jsonl_lines_read_as_text_are_parsed_as_fanout_run_parses_them(
    local_ray: Any, emulator_env: dict[str, str], tmp_path: Path
) -> None:
    lines = [
        '{"id": "a", "body": {"k": [1, "mixed", null]}}',  # a body no table column could hold
        '{"body": {"no": "id"}}',
        '{"id": "c", "body": 1e400}',
        "not json",
        '{"id": "e", "body": "x", "extra": 1}',
    ]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join([*lines[:2], "   ", *lines[2:]]) + "\n", encoding="utf-8")
    out = local_ray.data.read_text(str(path)).map_batches(
        Scorer,
        fn_constructor_kwargs={"endpoint_name": ENDPOINT, "line_column": "text"},
        batch_format="pyarrow",
        compute=local_ray.data.ActorPoolStrategy(size=1),
        runtime_env={"env_vars": emulator_env},
    )
    records = out.take_all()
    assert len(records) == len(lines), "one row per line; the blank line is skipped, as by fanout run"
    by_id = {record["id"]: record for record in records}
    body = b'{"k":[1,"mixed",null]}'
    assert json.loads(by_id["a"]["result"])["sha256"] == hashlib.sha256(body).hexdigest()
    no_id = [r for r in records if r["id"] not in ("a", "c", "e", None)]
    assert len(no_id) == 1 and no_id[0]["id"] == no_id[0]["inference_id"], "no id: the inference id"
    assert no_id[0]["status"] == "succeeded"
    assert by_id["c"]["status"] == "rejected" and "too large for a double" in by_id["c"]["failure_reason"]
    assert "unknown field 'extra'" in by_id["e"]["failure_reason"]
    assert by_id[None]["status"] == "rejected" and "malformed JSON" in by_id[None]["failure_reason"]


def test_a_run_level_error_fails_the_dataset(local_ray: Any, emulator_env: dict[str, str]) -> None:
    ds = local_ray.data.from_items([{"id": "1", "body": {"n": 1}}])
    out = ds.map_batches(
        Scorer,
        fn_constructor_kwargs={"endpoint_name": "no-such-endpoint"},
        batch_format="pyarrow",
        compute=local_ray.data.ActorPoolStrategy(size=1),
        runtime_env={"env_vars": emulator_env},
    )
    # Ray Data reports it as a UserCodeException whose text holds the original error and its traceback
    with pytest.raises(Exception, match="EndpointNotFound: endpoint 'no-such-endpoint' was not found"):
        out.take_all()


# -- the Scorer without Ray --------------------------------------------------------------------------


def _table(rows: list[dict[str, Any]]) -> Any:
    """A table with every key of every row (``from_pylist`` takes the first row's keys only)."""
    names = list(dict.fromkeys(name for row in rows for name in row))
    return pa.Table.from_pylist([{name: row.get(name) for name in names} for row in rows])


async def _score(scorer: Scorer, table: Any) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    async for batch in scorer(table):
        assert batch.schema == OUTPUT_SCHEMA
        records += batch.to_pylist()
    return records


@pytest.mark.anyio
async def test_batches_share_one_client_and_one_actor_directory(anyio_backend: Any) -> None:
    rows, sent = _rows()
    table = _table(rows)
    async with open_emulator() as emu:
        with aws_environment(emu.env):
            scorer = Scorer(endpoint_name=ENDPOINT)
            assert scorer.statistics() is None
            records: list[dict[str, Any]] = []
            async with anyio.create_task_group() as tg:

                async def score(part: Any) -> None:
                    records.extend(await _score(scorer, part))

                for start in range(0, len(rows), 100):
                    tg.start_soon(score, table.slice(start, 100))
            statistics = scorer.statistics()
            await scorer.aclose()
    _check(records, sent)
    assert len({r["output_location"].split("/")[5] for r in records if r["output_location"]}) == 1
    assert statistics is not None
    calls = statistics.api_calls
    assert calls["sagemaker-runtime.InvokeEndpointAsync"] == len(sent) + 1
    assert "sqs.ReceiveMessage" not in calls and "s3.HeadObject" not in calls
    assert calls["s3.ListObjectsV2"] < 20, "one listing resolves many requests"
    assert scorer.statistics() is None


@pytest.mark.anyio
async def test_an_inference_id_in_flight_twice_and_values_that_are_not_json_are_rejected(
    anyio_backend: Any,
) -> None:
    table = pa.Table.from_pylist(
        [
            {"id": "1", "body": {"n": 1}, "inference_id": "same", "when": None},
            {"id": "2", "body": {"n": 2}, "inference_id": "same", "when": None},
            {"id": "3", "body": {"n": 3}, "inference_id": None, "when": b"raw"},
            {"id": None, "body": {"n": 4}, "inference_id": None, "when": None},
        ]
    )
    async with open_emulator() as emu:
        with aws_environment(emu.env):
            scorer = Scorer(endpoint_name=ENDPOINT, tracking=S3Tracking(mode="head", interval=0.2))
            records = {r["id"]: r for r in await _score(scorer, table)}
            again = await _score(scorer, table.slice(0, 1))
            await scorer.aclose()
    assert records["1"]["status"] == "succeeded"
    assert records["2"]["status"] == "rejected" and "already in flight" in records["2"]["failure_reason"]
    assert records["3"]["status"] == "rejected" and "not JSON" in records["3"]["failure_reason"]
    (no_id,) = [r for r in records.values() if r["id"] not in ("1", "2", "3")]
    assert no_id["status"] == "succeeded" and no_id["id"] == no_id["inference_id"]
    assert again[0]["status"] == "succeeded", "the id is free again once its outcome came back"


@pytest.mark.anyio
async def test_sqs_tracking_works_for_one_actor(anyio_backend: Any) -> None:
    async with open_emulator() as emu:
        with aws_environment(emu.env):
            tracking = SqsTracking(queue_url=emu.env["FANOUT_QUEUE_URL"], wait_time_seconds=1)
            scorer = Scorer(endpoint_name=ENDPOINT, tracking=tracking, s3_output_path_extension=None)
            records = await _score(scorer, _table([{"id": str(n), "body": n} for n in range(20)]))
            statistics = scorer.statistics()
            assert statistics is not None
            calls = dict(statistics.api_calls)
            await scorer.aclose()
    assert sorted(r["id"] for r in records) == sorted(str(n) for n in range(20))
    assert {r["status"] for r in records} == {"succeeded"}
    assert all(r["output_location"].count("/") == 4 for r in records), "no extension"
    assert calls["sqs.ReceiveMessage"] >= 1 and "s3.ListObjectsV2" not in calls


def test_bad_settings_and_bad_batches_raise() -> None:
    with pytest.raises(ConfigError, match="endpoint_name"):
        Scorer(endpoint_name="not a name")
    with pytest.raises(ConfigError, match="s3_output_path_extension"):
        Scorer(endpoint_name=ENDPOINT, s3_output_path_extension="s3:nope")
    with pytest.raises(ConfigError, match="request_ttl_seconds"):
        Scorer(endpoint_name=ENDPOINT, request_ttl_seconds=5)
    with pytest.raises(ConfigError, match="staging"):
        Scorer(endpoint_name=ENDPOINT, payload="s3")
    scorer = Scorer(endpoint_name=ENDPOINT)
    with pytest.raises(TypeError, match="batch_format='pyarrow'"):
        anyio.run(_score, scorer, {"id": ["1"]})
    with pytest.raises(ConfigError, match="no column 'text'"):
        anyio.run(_score, Scorer(endpoint_name=ENDPOINT, line_column="text"), pa.table({"x": ["1"]}))


def test_the_schema_covers_every_output_field() -> None:
    assert OUTPUT_SCHEMA.names == [*OUTPUT_FIELDS, "result", "result_base64"]


def test_importing_it_without_ray_says_how_to_install_it() -> None:
    code = "import sys; sys.modules['ray'] = None; import fanout.ray"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "pip install 'fanout[ray]'" in result.stderr


def test_importing_fanout_does_not_import_ray() -> None:
    code = "import sys, fanout, fanout.testing; assert 'ray' not in sys.modules, 'ray was imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
