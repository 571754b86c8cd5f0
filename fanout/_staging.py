"""Staging payloads in S3, for requests that go through ``InputLocation``."""

from __future__ import annotations

import uuid
from typing import Any

import anyio

from ._config import S3Location, Staging, parse_s3_uri
from ._exceptions import StagingError, error_code, map_aws_errors

__all__ = ["Stager"]


class Stager:
    """Uploads payloads to ``<staging prefix>/<uuid4>`` with bounded concurrency.

    The keys are random, so staged inputs cannot be guessed or collide. SSE-KMS
    and ``ExpectedBucketOwner`` are applied to every call when configured.
    """

    def __init__(self, s3: Any, staging: Staging) -> None:
        self._s3 = s3
        self._staging = staging
        self._location: S3Location = staging.s3
        self._limiter = anyio.CapacityLimiter(staging.max_concurrency)
        self.uploads = 0
        self.deletes = 0

    def _owner(self) -> dict[str, str]:
        owner = self._staging.expected_bucket_owner
        return {"ExpectedBucketOwner": owner} if owner else {}

    async def check(self) -> None:
        """Raise ``BucketNotFound`` (or ``StagingError``) when the staging bucket cannot be used."""
        bucket = self._location.bucket
        try:
            with map_aws_errors(bucket=bucket):
                await self._s3.head_bucket(Bucket=bucket, **self._owner())
        except StagingError:
            raise
        except Exception as exc:
            if error_code(exc) is None:
                raise
            raise StagingError(f"staging bucket {bucket!r} cannot be used: {exc}") from exc

    async def upload(self, body: bytes, *, content_type: str | None) -> str:
        """Upload ``body`` and return its ``s3://`` URI. A missing bucket raises ``BucketNotFound``."""
        location = self._location.join(str(uuid.uuid4()))
        arguments: dict[str, Any] = {"Bucket": location.bucket, "Key": location.key, "Body": body}
        if content_type:
            arguments["ContentType"] = content_type
        if self._staging.sse_kms_key_id:
            arguments["ServerSideEncryption"] = "aws:kms"
            arguments["SSEKMSKeyId"] = self._staging.sse_kms_key_id
        arguments.update(self._owner())
        async with self._limiter:
            with map_aws_errors(bucket=location.bucket):
                await self._s3.put_object(**arguments)
        self.uploads += 1
        return str(location)

    async def delete(self, uri: str) -> None:
        """Delete a staged input; failures are ignored because the object is only garbage now."""
        location = parse_s3_uri(uri, what="staged input")
        try:
            async with self._limiter:
                await self._s3.delete_object(Bucket=location.bucket, Key=location.key, **self._owner())
        except Exception:
            return
        self.deletes += 1
