"""``fanout run``'s arguments, FANOUT_* defaults, exit codes and summary, without any network."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from fanout import ConfigError, HybridTracking, Limits, S3Tracking, SqsTracking
from fanout._cli import (
    CLI_NAMES,
    EXIT_ABORTED,
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_USAGE,
    build_parser,
    exit_code,
    main,
    parse_run_options,
    render_summary,
    summary_dict,
)
from fanout._models import RunReport
from fanout._run_command import RunOptions, RunResult

QUEUE = "http://127.0.0.1:9/123456789012/q"
ENV = {"FANOUT_ENDPOINT": "ep-1", "FANOUT_QUEUE_URL": QUEUE, "FANOUT_STAGING": "s3://stage-bucket/in"}


def _options(*args: str, env: dict[str, str] | None = None) -> RunOptions:
    parsed = build_parser().parse_args(["run", "-", "-o", "-", *args])
    return parse_run_options(parsed, ENV if env is None else env)


def test_the_fanout_variables_are_the_defaults() -> None:
    options = _options()
    assert options.endpoint_name == "ep-1"
    assert options.tracking == SqsTracking(queue_url=QUEUE)
    assert options.staging is not None and options.staging.location == "s3://stage-bucket/in"
    assert (options.payload, options.fetch, options.journal) == ("auto", True, None)
    assert options.defaults.content_type == "application/json"
    assert (options.limits.max_in_flight, options.limits.max_pending, options.limits.max_per_second) == (
        64,
        1_000,
        None,
    )


def test_flags_win_over_the_variables() -> None:
    options = _options(
        "--endpoint",
        "other",
        "--tracker",
        "hybrid",
        "--queue-url",
        "https://sqs.eu-west-1.amazonaws.com/1/x",
        "--staging",
        "s3://mine-1/p",
        "--max-in-flight",
        "8",
        "--max-pending",
        "50",
        "--rate",
        "12.5",
        "--request-ttl",
        "120",
        "--invocation-timeout",
        "30",
        "--no-fetch",
        "--content-type",
        "text/csv",
        "--resume-wait",
        "4",
        "--at-most-once",
    )
    assert options.endpoint_name == "other"
    assert isinstance(options.tracking, HybridTracking)
    assert options.tracking.queue_url == "https://sqs.eu-west-1.amazonaws.com/1/x"
    assert options.staging is not None and options.staging.location == "s3://mine-1/p"
    assert (options.limits.max_in_flight, options.limits.max_pending, options.limits.max_per_second) == (
        8,
        50,
        12.5,
    )
    assert (options.defaults.request_ttl_seconds, options.defaults.invocation_timeout_seconds) == (120, 30)
    assert (options.fetch, options.defaults.content_type) == (False, "text/csv")
    assert (options.retry.in_doubt_wait, options.retry.at_most_once) == (4.0, True)
    assert not _options("--queue-url", "https://q").retry.at_most_once


def test_s3_tracking_needs_no_queue_and_inline_needs_no_staging() -> None:
    options = _options("--tracker", "s3", "--payload", "inline", env={"FANOUT_ENDPOINT": "ep"})
    assert isinstance(options.tracking, S3Tracking)
    assert options.staging is None
    assert _options("--payload", "inline").staging is None


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ((), {}, "no endpoint"),
        ((), {"FANOUT_ENDPOINT": "ep"}, "--tracker sqs needs --queue-url"),
        (("--tracker", "hybrid"), {"FANOUT_ENDPOINT": "ep"}, "--tracker hybrid needs --queue-url"),
        (("--payload", "s3"), {"FANOUT_ENDPOINT": "ep", "FANOUT_QUEUE_URL": QUEUE}, "--payload s3 needs"),
        (("--endpoint", "bad_name!"), ENV, "--endpoint must be 1-63 letters"),
        (("--staging", "not-a-uri"), ENV, "--staging must look like s3://"),
        (("--content-type", "tëxt"), ENV, "--content-type must be"),
        (("--payload", "s3", "--staging", "s3://b/"), ENV, "--staging 's3://b/' has an invalid bucket name"),
    ],
)
def test_configuration_problems_are_config_errors_that_name_the_flag(
    args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        _options(*args, env=env)
    assert message in caught.value.naming(CLI_NAMES)


def test_the_library_names_the_parameter_where_the_cli_names_the_flag() -> None:
    with pytest.raises(ConfigError) as caught:
        Limits(max_in_flight=0)
    assert str(caught.value) == "max_in_flight must be an integer of 1 or more, got 0"
    assert caught.value.naming(CLI_NAMES) == "--max-in-flight must be an integer of 1 or more, got 0"


@pytest.mark.parametrize(
    "args",
    [
        ["run", "-", "-o", "-", "--request-ttl", "59"],
        ["run", "-", "-o", "-", "--invocation-timeout", "3601"],
        ["run", "-", "-o", "-", "--max-in-flight", "0"],
        ["run", "-", "-o", "-", "--rate", "-1"],
        ["run", "-", "-o", "-", "--tracker", "kinesis"],
        ["run", "-"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == EXIT_USAGE
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["run", "emulate", "demo"])
def test_a_wrong_flag_prints_the_commands_own_usage(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["run", "in.jsonl", "-o", "out.jsonl"] if command == "run" else [command]
    assert main([*args, "--bogus"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"usage: fanout {command} ")
    assert f"fanout {command}: error: unrecognized arguments: --bogus" in err


def test_a_missing_input_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", str(tmp_path / "missing.jsonl"), "-o", "-", "--endpoint", "ep", "--queue-url", QUEUE])
    assert code == EXIT_USAGE
    assert "does not exist" in capsys.readouterr().err


def _result(statuses: dict[str, int], *, stopped: bool = False, earlier: int = 0) -> RunResult:
    report = RunReport(
        succeeded=statuses.get("succeeded", 0),
        failed=statuses.get("failed", 0),
        rejected=statuses.get("rejected", 0),
        inline=3,
        s3=1,
        retries=2,
        p50=0.05,
        p95=0.2,
        p99=1.5,
        api_calls={"sagemaker-runtime.InvokeEndpointAsync": 6, "s3.PutObject": 1},
        elapsed=2.0,
    )
    return RunResult(report=report, stopped=stopped, statuses=statuses, earlier=earlier, resumed=0)


def test_exit_codes() -> None:
    assert exit_code(_result({"succeeded": 4})) == EXIT_OK
    assert exit_code(_result({})) == EXIT_OK
    assert exit_code(_result({"succeeded": 3, "rejected": 1})) == EXIT_SOME_FAILED
    assert exit_code(_result({"succeeded": 4}, stopped=True)) == EXIT_ABORTED


def test_the_summary_table_and_its_json_form() -> None:
    result = _result({"succeeded": 3, "failed": 1}, earlier=10)
    stream = io.StringIO()
    render_summary(result, EXIT_SOME_FAILED, stream)
    text = stream.getvalue()
    for fragment in (
        "succeeded",
        "all runs",
        "p99 to completion",
        "1.50 s",
        "50 ms",
        "s3.PutObject",
        "exit code 1",
    ):
        assert fragment in text
    summary = json.loads(json.dumps(summary_dict(result, EXIT_SOME_FAILED)))
    assert summary["exit_code"] == 1
    assert summary["this_run"]["api_calls"] == {"sagemaker-runtime.InvokeEndpointAsync": 6, "s3.PutObject": 1}
    assert summary["this_run"]["total"] == 4


def test_bench_passes_every_flag_to_the_suite(capsys: pytest.CaptureFixture[str]) -> None:
    from fanout._cli import main

    with pytest.raises(SystemExit) as info:
        main(["bench", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: fanout bench")  # its own name, and the suite's description
    assert "fanout benchmarks:" in out


def test_bench_outside_a_checkout_says_where_to_run_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    from fanout._cli import main

    monkeypatch.chdir(tmp_path)
    for name in [m for m in sys.modules if m == "benchmarks" or m.startswith("benchmarks.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if not Path(p, "benchmarks").is_dir()])
    assert main(["bench", "--quick"]) == 2
    assert "source checkout" in capsys.readouterr().err


def test_version_and_help_show_every_default_and_the_input_format(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("fanout ")
    assert main(["run", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for fragment in (
        "concurrent InvokeEndpointAsync calls (default: 64)",
        "(default: 1000)",
        "cap on invokes per second (default: none",
        "(default: 300)",
        "(default: application/json)",
        "input: one JSON object per line",
        '{"id": "a1", "body": {"text": "hello"}}',
    ):
        assert fragment in text


def test_counts_take_the_right_number_and_progress_labels_match_the_summary() -> None:
    from fanout._cli import _count, _detail
    from fanout._run_command import RunProgress

    assert (_count(1, "outcome"), _count(0, "outcome"), _count(1234, "request")) == (
        "1 outcome",
        "0 outcomes",
        "1,234 requests",
    )
    snapshot = RunProgress(
        read=5, submitted=5, accepted=4, completed={"succeeded": 1234, "rejected": 1}, throttles=0,
        current_limit=12, outstanding=3, earlier=0, in_flight=3,
    )  # fmt: skip
    detail = _detail(snapshot, 0.5)
    assert "succeeded 1,234 · failed 0 · expired 0 · rejected 1" in detail
    assert "in flight 3 of 12 allowed" in detail
    stream = io.StringIO()
    render_summary(_result({"succeeded": 1}), EXIT_OK, stream)
    assert "fanout run: 1 outcome in" in stream.getvalue()
    for status in ("succeeded", "failed", "expired", "rejected"):
        assert status in stream.getvalue()


def test_the_last_frame_shows_the_rate_over_the_whole_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from fanout import _cli

    now = [100.0]
    monkeypatch.setattr("fanout._cli.time.monotonic", lambda: now[0])
    clock = _cli._Rate()
    for second in range(1, 11):  # 10 s: 100/s for 5 s, then 1,000/s
        now[0] = 100.0 + second
        done = 100 * second if second <= 5 else 500 + 1_000 * (second - 5)
        recent, _ = clock.update(done, 0)
    assert recent == pytest.approx(1_000)  # the live frames: the last few seconds
    whole, throttles = clock.update(done, 20, whole_run=True)
    assert whole == pytest.approx(5_500 / 10) and throttles == pytest.approx(2.0)  # as the summary
