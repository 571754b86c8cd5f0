"""``fanout run --check``: what a run would find wrong before it sends, found with nothing sent.

Every check is the run's own, called without the run:

* **the input**: ``RunCommand.check_input`` reads each line with the run's reader (parsing, duplicate
  ids in a temporary journal, the ``--rerun`` selection) and plans each request as the dispatcher
  does (validation, then the inline or S3 route), so a line is a problem exactly when a run would
  write a ``rejected`` record for it before sending;
* **the files**: the checks ``RunCommand`` makes (one path per role, an output that can be written),
  without creating or truncating the output or opening the journal;
* **region, credentials and staging bucket**: the dispatcher's ``check`` on the clients a run makes;
* **the queue**: the tracker's ``check`` (GetQueueAttributes), without starting the tracker, whose
  receives would hide other runs' notifications;
* **the endpoint**: ``sagemaker:DescribeEndpoint``, which a run never calls: it exists, is
  InService, has an ``AsyncInferenceConfig``, and, for ``--tracker sqs`` and ``hybrid``, SNS topics.
  A run needs only ``sagemaker:InvokeEndpointAsync``, so without permission (or without a route to
  the control plane) the endpoint is reported not checked, and that is not a problem.

A problem is what would stop a run or reject its lines (exit 2); a warning is what the run would
survive but the user likely did not intend.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from ._aws import ensure_session, open_aws_client, runtime_client_config
from ._config import HybridTracking, S3Tracking, SqsTracking, Tracking
from ._dispatch import Dispatcher
from ._exceptions import (
    ConfigError,
    CredentialsError,
    FanoutError,
    ServiceUnreachable,
    error_code,
    map_aws_errors,
)
from ._rerun import NO_RECORD
from ._run_command import InputCheck, RunCommand, RunOptions
from ._tracking import Tracker

__all__ = ["CheckReport", "Finding", "Status", "check_run", "judge_endpoint"]

Status: TypeAlias = Literal["ok", "problem", "warning", "not checked"]

_MAY_SERVE = frozenset({"Updating", "SystemUpdating", "RollingBack", "UpdateRollbackFailed"})
"""Endpoint states that are not InService but still take invocations (an update keeps the old fleet)."""
_NOT_FOUND = frozenset({"ValidationException", "ValidationError"})


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing checked: ``subject`` (``input``, ``endpoint``, ``queue``, ...), its status, and a
    sentence that names the value it is about."""

    subject: str
    status: Status
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckReport:
    findings: Sequence[Finding]
    input: InputCheck | None
    """What the input check found, when it ran."""

    @property
    def problems(self) -> int:
        return sum(1 for finding in self.findings if finding.status == "problem")

    @property
    def warnings(self) -> int:
        return sum(1 for finding in self.findings if finding.status == "warning")

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "ok": self.ok,
            "problems": self.problems,
            "warnings": self.warnings,
            "checks": [
                {"subject": item.subject, "status": item.status, "detail": item.detail}
                for item in self.findings
            ],
        }
        lines = self.input
        if lines is not None:
            document["input"] = {
                "lines": lines.lines,
                "requests": lines.requests,
                "inline": lines.inline,
                "s3": lines.s3,
                "problems": lines.problems,
                "first_problems": [
                    {"line": item.line, "id": item.id, "reason": item.reason} for item in lines.first_problems
                ],
            }
            if lines.rerun is not None:
                document["rerun"] = lines.rerun.to_dict()
        return document


async def check_run(
    options: RunOptions, output_given: bool = True, *, session: Any = None, keep: int = 20
) -> CheckReport:
    """Check everything ``options`` would need (see the module docstring); ``keep`` problem lines.
    ``output_given=False``: no ``-o`` was given, so ``options.output`` is not checked.

    Never raises for what it checks: each problem is a ``Finding``.
    """
    findings: list[Finding] = []
    lines: InputCheck | None = None
    try:
        command = RunCommand(options, writes=output_given)
    except ConfigError as exc:
        findings.append(Finding("files", "problem", str(exc)))
        findings.append(Finding("input", "not checked", "the files named above must be told apart first"))
    else:
        try:
            lines = await command.check_input(keep=keep)
        except ConfigError as exc:
            findings.append(Finding("rerun" if options.rerun else "input", "problem", str(exc)))
        else:
            findings.extend(_input_findings(lines, options))
        findings.extend(_file_findings(command, options, output_given))
    findings.extend(await _aws_findings(options, session))
    return CheckReport(findings=tuple(findings), input=lines)


# -- the input and the files ------------------------------------------------------------------------


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}" if number == 1 else f"{number:,} {noun}s"


def _input_findings(lines: InputCheck, options: RunOptions) -> list[Finding]:
    findings = []
    if lines.rerun is not None:
        findings.append(Finding("rerun", "ok", lines.rerun.describe().removeprefix("rerun: ")))
        missing = lines.rerun.by_status.get(NO_RECORD, 0)
        if missing:
            findings.append(
                Finding(
                    "rerun",
                    "warning",
                    f"{_count(missing, 'line')} with no record would be sent: right after a run that "
                    "stopped early, that is what you want; if a rerun's output is given, give the "
                    "outputs of the runs before it too (--rerun once for each)",
                )
            )
        if lines.rerun.own_inference_ids:
            findings.append(
                Finding(
                    "rerun",
                    "warning",
                    f"{_count(lines.rerun.own_inference_ids, 'line')} would be sent again under the "
                    "inference_id the input gives: a late notification of the earlier attempt could "
                    "settle it with the earlier outcome",
                )
            )
    name = "standard input" if options.input == "-" else options.input
    routes = f"{lines.inline:,} inline, {lines.s3:,} through S3"
    read = _count(lines.lines, "selected line" if lines.rerun is not None else "line")
    if lines.problems:
        detail = (
            f"{name}: {lines.problems:,} of {read} would be rejected (listed below); "
            f"{_count(lines.requests, 'request')} would be sent ({routes})"
        )
        findings.append(Finding("input", "problem", detail))
    else:
        findings.append(Finding("input", "ok", f"{name}: {read}, all valid: {routes}"))
    return findings


def _file_findings(command: RunCommand, options: RunOptions, output_given: bool) -> list[Finding]:
    findings = []
    output = options.output
    if output_given:
        try:
            command.check_output_writable()
        except ConfigError as exc:
            findings.append(Finding("output", "problem", str(exc)))
        else:
            if output == "-":
                detail = "standard output"
            elif not os.path.exists(output):
                detail = f"{output}: would be created"
            elif options.journal is not None and os.path.exists(options.journal):
                detail = f"{output}: exists, and the journal would resume it"
            else:
                detail = f"{output}: exists, and a run would overwrite it"
            findings.append(Finding("output", "ok", detail))
    if options.journal is not None:
        if os.path.exists(options.journal):
            detail = f"{options.journal}: exists; a run would resume it if it belongs to this command"
        else:
            detail = f"{options.journal}: would be created"
        findings.append(Finding("journal", "ok", detail))
    return findings


# -- AWS ----------------------------------------------------------------------------------------------


def _queue_url(tracking: Tracking) -> str | None:
    if isinstance(tracking, SqsTracking | HybridTracking):
        return tracking.queue_url
    return None


async def _aws_findings(options: RunOptions, session: Any) -> list[Finding]:
    from aiobotocore.config import AioConfig

    findings: dict[str, Finding] = {}
    queue_url = _queue_url(options.tracking)
    subjects = ["region", "credentials", "endpoint", "notifications"]
    if queue_url is not None:
        subjects.append("queue")
    if options.staging is not None:
        subjects.append("staging")

    def listed(unchecked: str) -> list[Finding]:
        """The findings in order; what was not reached is not checked, for ``unchecked``."""
        return [
            findings.get(subject) or Finding(subject, "not checked", unchecked)
            for subject in subjects
            if subject in findings or subject != "notifications"
        ]

    session = ensure_session(session)
    async with AsyncExitStack() as stack:
        try:
            runtime = await stack.enter_async_context(
                open_aws_client(session, "sagemaker-runtime", config=runtime_client_config(options.limits))
            )
        except ConfigError as exc:
            findings["region"] = Finding("region", "problem", str(exc))
            return listed("no region")
        findings["region"] = Finding("region", "ok", str(runtime.meta.region_name))
        s3 = await stack.enter_async_context(open_aws_client(session, "s3"))
        dispatcher = Dispatcher(
            endpoint_name=options.endpoint_name,
            runtime=runtime,
            s3=s3,
            payload=options.payload,
            staging=options.staging,
        )
        try:
            await dispatcher.check()  # credentials first, then the staging bucket
        except CredentialsError as exc:
            findings["credentials"] = Finding("credentials", "problem", str(exc))
            return listed("no credentials")
        except FanoutError as exc:
            assert options.staging is not None
            location = options.staging.location
            bucket = f"'{options.staging.s3.bucket}'"
            findings["staging"] = Finding(
                "staging", "problem", _naming(str(exc), "staging", location, named_by=bucket)
            )
        else:
            if options.staging is not None:
                findings["staging"] = Finding(
                    "staging", "ok", f"{options.staging.location}: the bucket exists"
                )
        credentials = await session.get_credentials()
        method = getattr(credentials, "method", None)
        findings["credentials"] = Finding("credentials", "ok", f"found ({method})" if method else "found")
        try:
            # The control plane is not a run's: few retries and short timeouts, so it never hangs a check.
            control = AioConfig(
                retries={"mode": "standard", "total_max_attempts": 2}, connect_timeout=5, read_timeout=20
            )
            sagemaker = await stack.enter_async_context(open_aws_client(session, "sagemaker", config=control))
            for finding in await _endpoint_findings(sagemaker, options):
                findings[finding.subject] = finding
            if queue_url is not None:
                findings["queue"] = await _queue_finding(options.tracking, queue_url, s3, stack, session)
        except CredentialsError as exc:
            # Present, but refused: what was not checked by then cannot be.
            findings["credentials"] = Finding("credentials", "problem", str(exc))
            return listed("the credentials were refused")
    return listed("")


async def _queue_finding(
    tracking: Tracking, queue_url: str, s3: Any, stack: AsyncExitStack, session: Any
) -> Finding:
    from aiobotocore.config import AioConfig

    sqs = await stack.enter_async_context(
        open_aws_client(
            session, "sqs", config=AioConfig(retries={"mode": "standard", "total_max_attempts": 1})
        )
    )
    tracker = Tracker(tracking=tracking, sqs=sqs, s3=s3, fetch=False, fetch_concurrency=1, max_pending=1)
    try:
        await tracker.check()
    except CredentialsError:
        raise
    except FanoutError as exc:
        return Finding("queue", "problem", _naming(str(exc), "SQS queue", queue_url, named_by=queue_url))
    except Exception as exc:
        if error_code(exc) is None:
            raise
        return Finding("queue", "problem", f"SQS queue {queue_url!r} cannot be read: {_aws_message(exc)}")
    return Finding("queue", "ok", f"{queue_url}: the queue exists")


async def _endpoint_findings(sagemaker: Any, options: RunOptions) -> list[Finding]:
    name = options.endpoint_name
    region = sagemaker.meta.region_name
    try:
        with map_aws_errors(endpoint_name=name):
            description = await sagemaker.describe_endpoint(EndpointName=name)
    except CredentialsError:
        raise
    except ServiceUnreachable as exc:
        return [
            Finding(
                "endpoint",
                "not checked",
                f"DescribeEndpoint could not be called ({exc}); a run needs only the runtime's "
                "InvokeEndpointAsync, so this is not a problem by itself",
            )
        ]
    except Exception as exc:
        code = error_code(exc)
        if code is None:
            raise
        message = _aws_message(exc)
        if code in _NOT_FOUND and "could not find" in message.lower():
            return [
                Finding(
                    "endpoint",
                    "problem",
                    f"endpoint {name!r} was not found in {region} (DescribeEndpoint: {message.rstrip('.')})",
                )
            ]
        if code == "AccessDeniedException":
            reason = "these credentials may not call sagemaker:DescribeEndpoint (AccessDeniedException)"
        else:
            reason = f"DescribeEndpoint failed: {code}: {message}"
        return [
            Finding(
                "endpoint",
                "not checked",
                f"{name!r} was not checked: {reason}. A run needs only sagemaker:InvokeEndpointAsync, "
                "and a missing endpoint would stop it at the first request, before anything is written",
            )
        ]
    return judge_endpoint(name, description, options.tracking)


def _naming(message: str, what: str, value: str, *, named_by: str) -> str:
    """``message``, saying which value it is about unless it does (``named_by`` is in it): a
    connection error names a URL, not the queue or the bucket."""
    return message if named_by in message else f"{what} {value!r}: {message}"


def _aws_message(exc: BaseException) -> str:
    response: Any = getattr(exc, "response", None)
    error = response.get("Error", {}) if isinstance(response, dict) else {}
    return str(error.get("Message") or exc)


def judge_endpoint(name: str, description: Mapping[str, Any], tracking: Tracking) -> list[Finding]:
    """What a DescribeEndpoint answer means for a run with ``tracking``: an ``endpoint`` finding,
    and a ``notifications`` one for the SQS and hybrid trackers. Pure."""
    status = description.get("EndpointStatus")
    async_config = description.get("AsyncInferenceConfig")
    problems: list[str] = []
    warnings: list[str] = []
    if status != "InService":
        if status in _MAY_SERVE:
            warnings.append(f"is {status}, not InService: it takes requests meanwhile, from the fleet it had")
        else:
            reason = description.get("FailureReason")
            problems.append(
                f"is {status}, not InService: it would refuse every request"
                + (f" ({reason})" if reason else "")
            )
    if not isinstance(async_config, Mapping):
        problems.append(
            "has no AsyncInferenceConfig: it is a real-time endpoint, and refuses InvokeEndpointAsync"
        )
    findings = []
    if problems or warnings:
        findings.append(
            Finding(
                "endpoint",
                "problem" if problems else "warning",
                f"endpoint {name!r} " + "; it ".join(problems + warnings),
            )
        )
    else:
        output = (async_config or {}).get("OutputConfig") or {}
        where = output.get("S3OutputPath")
        findings.append(
            Finding(
                "endpoint", "ok", f"{name}: InService, async" + (f", outputs to {where}" if where else "")
            )
        )
    if isinstance(async_config, Mapping) and not isinstance(tracking, S3Tracking):
        findings.append(_notifications(async_config, tracking))
    return findings


def _notifications(async_config: Mapping[str, Any], tracking: Tracking) -> Finding:
    output = async_config.get("OutputConfig") or {}
    topics = output.get("NotificationConfig") or {}
    success, error = topics.get("SuccessTopic"), topics.get("ErrorTopic")
    hybrid = isinstance(tracking, HybridTracking)
    flag = "--tracker hybrid" if hybrid else "--tracker sqs"
    if success and error:
        return Finding("notifications", "ok", f"success to {success}, errors to {error}")
    if not success and not error:
        then = (
            "outcomes would be found only by polling S3, after --reconcile-after"
            if hybrid
            else "every request would expire; --tracker s3 polls S3 instead"
        )
        return Finding(
            "notifications",
            "warning",
            f"the endpoint has no SNS topic (AsyncInferenceConfig.OutputConfig.NotificationConfig), so no "
            f"notification reaches --queue-url: with {flag} {then}",
        )
    missing, kind = ("ErrorTopic", "failures") if success else ("SuccessTopic", "successes")
    then = "found only by polling S3" if hybrid else "reported expired"
    return Finding(
        "notifications",
        "warning",
        f"the endpoint has no {missing}: {kind} are not notified, and with {flag} would be {then}",
    )
