"""``--check`` asks DescribeEndpoint, which a run never needs: a fake control plane's refusals."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from fanout._check import _endpoint_findings
from fanout._config import S3Tracking
from fanout._exceptions import CredentialsError
from fanout._run_command import RunOptions

pytestmark = pytest.mark.anyio


class _Meta:
    region_name = "eu-west-1"


class _ControlPlane:
    """A sagemaker client whose DescribeEndpoint fails with ``code``."""

    meta = _Meta()

    def __init__(self, code: str, message: str) -> None:
        self._error = {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        }

    async def describe_endpoint(self, **_: Any) -> Any:
        raise ClientError(self._error, "DescribeEndpoint")


OPTIONS = RunOptions(input="in.jsonl", output="out.jsonl", endpoint_name="my-endpoint", tracking=S3Tracking())


async def test_without_permission_the_endpoint_is_not_checked_and_that_is_not_a_problem() -> None:
    message = "User: arn:aws:iam::1:user/u is not authorized to perform: sagemaker:DescribeEndpoint"
    [finding] = await _endpoint_findings(_ControlPlane("AccessDeniedException", message), OPTIONS)
    assert finding.status == "not checked"
    assert finding.detail.startswith(
        "'my-endpoint' was not checked: these credentials may not call sagemaker:DescribeEndpoint "
        "(AccessDeniedException). A run needs only sagemaker:InvokeEndpointAsync"
    )


async def test_a_missing_endpoint_is_a_problem_naming_it_and_the_region() -> None:
    message = 'Could not find endpoint "arn:aws:sagemaker:eu-west-1:1:endpoint/my-endpoint".'
    [finding] = await _endpoint_findings(_ControlPlane("ValidationException", message), OPTIONS)
    assert (finding.subject, finding.status) == ("endpoint", "problem")
    assert finding.detail == (
        "endpoint 'my-endpoint' was not found in eu-west-1 (DescribeEndpoint: Could not find endpoint "
        '"arn:aws:sagemaker:eu-west-1:1:endpoint/my-endpoint")'
    )


async def test_refused_credentials_stop_the_aws_checks() -> None:
    with pytest.raises(CredentialsError, match="AWS rejected the credentials"):
        await _endpoint_findings(_ControlPlane("UnrecognizedClientException", "bad token"), OPTIONS)
