"""An in-memory S3 and its REST-XML handler (path-style, or virtual hosts under ``.localhost``).

Each bucket keeps its keys in a sorted list beside the object dict, so a
ListObjectsV2 page costs a binary search plus the page, not a scan of the bucket.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Final
from urllib.parse import quote, unquote
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from aiohttp import web

__all__ = ["S3Error", "S3Object", "S3Store", "s3_operation"]

_XMLNS: Final = "http://s3.amazonaws.com/doc/2006-03-01/"
_XML_HEAD: Final = '<?xml version="1.0" encoding="UTF-8"?>\n'
_DEFAULT_CONTENT_TYPE: Final = "binary/octet-stream"
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_MAX_KEYS: Final = 1000
_CHECKSUM: Final = "x-amz-checksum-"


class S3Error(Exception):
    """An S3 error with its code, message and HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400, *, resource: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.resource = resource


@dataclass(frozen=True, slots=True)
class S3Object:
    """One stored object; ``etag`` is quoted as S3 sends it (``'"<md5 hex>"'``)."""

    body: bytes
    content_type: str
    etag: str
    last_modified: datetime
    metadata: Mapping[str, str] = field(default_factory=dict)
    server_side_encryption: str | None = None
    sse_kms_key_id: str | None = None
    checksums: Mapping[str, str] = field(default_factory=dict)  # e.g. {"CRC32": "<base64>"} as uploaded


class _Bucket:
    __slots__ = ("created", "keys", "objects")

    def __init__(self) -> None:
        self.created = datetime.now(UTC)
        self.keys: list[str] = []
        self.objects: dict[str, S3Object] = {}


def s3_operation(request: web.BaseRequest) -> str:
    """The S3 operation a request asks for, e.g. ``"PutObject"`` or ``"ListObjectsV2"``."""
    bucket, key = _bucket_and_key(request)
    method = request.method
    if not bucket:
        return "ListBuckets" if method == "GET" else "Unknown"
    if key:
        if method == "PUT":
            return "CopyObject" if "x-amz-copy-source" in request.headers else "PutObject"
        return {"GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}.get(method, "Unknown")
    query = request.query
    if method == "GET":
        return "ListObjectsV2" if query.get("list-type") == "2" else "ListObjects"
    if method == "POST" and "delete" in query:
        return "DeleteObjects"
    return {"PUT": "CreateBucket", "HEAD": "HeadBucket", "DELETE": "DeleteBucket"}.get(method, "Unknown")


def _bucket_and_key(request: web.BaseRequest) -> tuple[str, str]:
    path = request.rel_url.raw_path
    host = request.host.rsplit(":", 1)[0] if request.host else ""
    if host.endswith(".localhost"):
        return host[: -len(".localhost")], unquote(path[1:])
    bucket, _, key = path[1:].partition("/")
    return unquote(bucket), unquote(key)


def _decode_aws_chunked(data: bytes) -> tuple[bytes, dict[str, str]]:
    """The payload of an ``aws-chunked`` body (signed or not) and its trailing headers."""
    out = bytearray()
    position = 0
    while True:
        end = data.find(b"\r\n", position)
        if end < 0:
            raise S3Error("IncompleteBody", "The aws-chunked body ended early.")
        try:
            size = int(data[position:end].split(b";", 1)[0], 16)
        except ValueError:
            raise S3Error("InvalidRequest", "The aws-chunked body is malformed.") from None
        if size == 0:
            trailers: dict[str, str] = {}
            for line in data[end + 2 :].decode("latin-1").split("\r\n"):
                name, colon, value = line.partition(":")
                if colon:
                    trailers[name.strip().lower()] = value.strip()
            return bytes(out), trailers
        start = end + 2
        if start + size > len(data):
            raise S3Error("IncompleteBody", "The aws-chunked body ended early.")
        out += data[start : start + size]
        position = start + size + 2


def _http_date(moment: datetime) -> str:
    return format_datetime(moment, usegmt=True)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class S3Store:
    """In-memory buckets and objects with an aiohttp handler speaking S3's REST-XML."""

    def __init__(self, *, region: str, account_id: str) -> None:
        self.region = region
        self.account_id = account_id
        self._buckets: dict[str, _Bucket] = {}
        self._bytes = 0
        self._request_ids = itertools.count(1)

    # -- Python API ---------------------------------------------------------------------------------

    def create_bucket(self, bucket: str) -> None:
        """Create the bucket; creating one that exists is a no-op."""
        if not _BUCKET_NAME.fullmatch(bucket):
            raise S3Error("InvalidBucketName", "The specified bucket is not valid.", resource=bucket)
        self._buckets.setdefault(bucket, _Bucket())

    def bucket_exists(self, bucket: str) -> bool:
        return bucket in self._buckets

    def put_object(
        self,
        bucket: str,
        key: str,
        body: bytes,
        *,
        content_type: str | None = None,
        metadata: dict[str, str] | None = None,
        server_side_encryption: str | None = None,
        sse_kms_key_id: str | None = None,
        checksums: dict[str, str] | None = None,
    ) -> str:
        """Store the object and return its quoted ETag; raises ``S3Error("NoSuchBucket")``."""
        store = self._bucket(bucket)
        if not key or len(key.encode()) > 1024:
            raise S3Error(
                "KeyTooLongError" if key else "InvalidArgument", "Invalid object key.", resource=key
            )
        etag = f'"{hashlib.md5(body, usedforsecurity=False).hexdigest()}"'
        old = store.objects.get(key)
        if old is None:
            bisect.insort(store.keys, key)
        else:
            self._bytes -= len(old.body)
        store.objects[key] = S3Object(
            body=bytes(body),
            content_type=content_type or _DEFAULT_CONTENT_TYPE,
            etag=etag,
            last_modified=datetime.now(UTC),
            metadata=dict(metadata or {}),
            server_side_encryption=server_side_encryption,
            sse_kms_key_id=sse_kms_key_id,
            checksums=dict(checksums or {}),
        )
        self._bytes += len(body)
        return etag

    def get_object(self, bucket: str, key: str) -> S3Object | None:
        """The object, or None when the bucket or the key is missing."""
        store = self._buckets.get(bucket)
        return None if store is None else store.objects.get(key)

    def delete_object(self, bucket: str, key: str) -> None:
        """Delete the object if it exists (S3 answers 204 either way)."""
        store = self._bucket(bucket)
        old = store.objects.pop(key, None)
        if old is not None:
            del store.keys[bisect.bisect_left(store.keys, key)]
            self._bytes -= len(old.body)

    def statistics(self) -> dict[str, int]:
        """``buckets``, ``objects`` and ``bytes`` stored."""
        return {
            "buckets": len(self._buckets),
            "objects": sum(len(b.objects) for b in self._buckets.values()),
            "bytes": self._bytes,
        }

    def _bucket(self, bucket: str) -> _Bucket:
        store = self._buckets.get(bucket)
        if store is None:
            raise S3Error("NoSuchBucket", "The specified bucket does not exist", 404, resource=bucket)
        return store

    # -- wire protocol ------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._dispatch(request)
        except S3Error as error:
            return self._error(request, error)

    def _request_id(self) -> str:
        return f"{next(self._request_ids):016X}"

    def _error(self, request: web.BaseRequest, error: S3Error) -> web.Response:
        headers = {"x-amz-request-id": self._request_id()}
        if request.method == "HEAD":
            return web.Response(status=error.status, headers=headers)
        parts = [f"<Error><Code>{error.code}</Code><Message>{escape(error.message)}</Message>"]
        if error.resource is not None:
            tag = "BucketName" if error.code == "NoSuchBucket" else "Key"
            parts.append(f"<{tag}>{escape(error.resource)}</{tag}>")
        parts.append(f"<RequestId>{headers['x-amz-request-id']}</RequestId></Error>")
        return self._xml("".join(parts), status=error.status, headers=headers)

    def _xml(self, body: str, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        headers = headers or {"x-amz-request-id": self._request_id()}
        return web.Response(
            status=status, body=(_XML_HEAD + body).encode(), content_type="application/xml", headers=headers
        )

    def _empty(self, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(
            status=status, headers={"x-amz-request-id": self._request_id(), **(headers or {})}
        )

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        operation = s3_operation(request)
        bucket, key = _bucket_and_key(request)
        expected_owner = request.headers.get("x-amz-expected-bucket-owner")
        if expected_owner is not None and expected_owner != self.account_id:
            raise S3Error("AccessDenied", "Access Denied", 403)
        if operation == "PutObject":
            return await self._put_object(request, bucket, key)
        if operation in ("GetObject", "HeadObject"):
            return self._get_object(request, bucket, key)
        if operation == "DeleteObject":
            self.delete_object(bucket, key)
            return self._empty(204)
        if operation == "ListObjectsV2":
            return self._list_objects_v2(request, bucket)
        if operation == "DeleteObjects":
            return self._delete_objects(await request.read(), bucket)
        if operation == "CreateBucket":
            if bucket in self._buckets and self.region != "us-east-1":
                raise S3Error(
                    "BucketAlreadyOwnedByYou",
                    "Your previous request to create the named bucket succeeded.",
                    409,
                )
            self.create_bucket(bucket)
            return self._empty(headers={"Location": f"/{bucket}"})
        if operation == "HeadBucket":
            self._bucket(bucket)
            return self._empty(headers={"x-amz-bucket-region": self.region})
        if operation == "DeleteBucket":
            if self._bucket(bucket).objects:
                raise S3Error(
                    "BucketNotEmpty", "The bucket you tried to delete is not empty", 409, resource=bucket
                )
            del self._buckets[bucket]
            return self._empty(204)
        if operation == "ListBuckets":
            return self._list_buckets()
        raise S3Error("NotImplemented", f"The emulator does not implement {operation}.", 501)

    async def _put_object(self, request: web.Request, bucket: str, key: str) -> web.StreamResponse:
        self._bucket(bucket)  # before reading a body that would be thrown away
        headers = request.headers
        body = await request.read()
        checksum_headers = {k.lower(): v for k, v in headers.items() if k.lower().startswith(_CHECKSUM)}
        encodings = [e.strip() for e in headers.get("Content-Encoding", "").split(",") if e.strip()]
        if "aws-chunked" in encodings or headers.get("x-amz-content-sha256", "").startswith("STREAMING-"):
            body, trailers = _decode_aws_chunked(body)
            checksum_headers.update((k, v) for k, v in trailers.items() if k.startswith(_CHECKSUM))
            declared = headers.get("x-amz-decoded-content-length")
            if declared is not None and declared.isdigit() and int(declared) != len(body):
                raise S3Error("IncompleteBody", "You did not provide the number of bytes specified.")
        metadata = {
            name[len("x-amz-meta-") :].lower(): value
            for name, value in headers.items()
            if name.lower().startswith("x-amz-meta-")
        }
        sse = headers.get("x-amz-server-side-encryption")
        kms_key = headers.get("x-amz-server-side-encryption-aws-kms-key-id")
        if sse == "aws:kms" and kms_key is None:
            kms_key = f"arn:aws:kms:{self.region}:{self.account_id}:alias/aws/s3"
        etag = self.put_object(
            bucket,
            key,
            body,
            content_type=headers.get("Content-Type"),
            metadata=metadata,
            server_side_encryption=sse,
            sse_kms_key_id=kms_key,
            checksums={
                k[len(_CHECKSUM) :].upper(): v
                for k, v in checksum_headers.items()
                if k != "x-amz-checksum-type"
            },
        )
        echoed = {k: v for k, v in checksum_headers.items() if k != "x-amz-checksum-type"}
        return self._empty(headers={"ETag": etag, **_sse_headers(sse, kms_key), **echoed})

    def _get_object(self, request: web.Request, bucket: str, key: str) -> web.StreamResponse:
        found = self._bucket(bucket).objects.get(key)
        if found is None:
            raise S3Error("NoSuchKey", "The specified key does not exist.", 404, resource=key)
        headers = {
            "x-amz-request-id": self._request_id(),
            "ETag": found.etag,
            "Last-Modified": _http_date(found.last_modified),
            "Accept-Ranges": "bytes",
            "Content-Type": found.content_type,
            **{f"x-amz-meta-{name}": value for name, value in found.metadata.items()},
            **_sse_headers(found.server_side_encryption, found.sse_kms_key_id),
        }
        if request.headers.get("x-amz-checksum-mode", "").upper() == "ENABLED":
            headers.update((f"{_CHECKSUM}{name.lower()}", value) for name, value in found.checksums.items())
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(found.body))
            return web.Response(headers=headers)
        return web.Response(body=found.body, headers=headers)

    def _delete_objects(self, payload: bytes, bucket: str) -> web.StreamResponse:
        self._bucket(bucket)
        try:
            root = ElementTree.fromstring(payload)
        except ElementTree.ParseError:
            raise S3Error("MalformedXML", "The XML you provided was not well-formed.") from None
        ns = f"{{{_XMLNS}}}" if root.tag.startswith("{") else ""
        keys = [obj.findtext(f"{ns}Key") or "" for obj in root.iter(f"{ns}Object")]
        if not keys or len(keys) > _MAX_KEYS:
            raise S3Error("MalformedXML", "The XML you provided was not well-formed.")
        quiet = (root.findtext(f"{ns}Quiet") or "").strip().lower() == "true"
        parts = [f'<DeleteResult xmlns="{_XMLNS}">']
        for key in keys:
            self.delete_object(bucket, key)
            if not quiet:
                parts.append(f"<Deleted><Key>{escape(key)}</Key></Deleted>")
        parts.append("</DeleteResult>")
        return self._xml("".join(parts))

    def _list_objects_v2(self, request: web.Request, bucket: str) -> web.StreamResponse:
        store = self._bucket(bucket)
        query = request.query
        prefix = query.get("prefix", "")
        delimiter = query.get("delimiter", "")
        start_after = query.get("start-after", "")
        token = query.get("continuation-token")
        url = query.get("encoding-type") == "url"
        try:
            max_keys = min(int(query.get("max-keys", _MAX_KEYS)), _MAX_KEYS)
        except ValueError:
            raise S3Error(
                "InvalidArgument", "Provided max-keys not an integer or within integer range"
            ) from None
        if max_keys < 0:
            raise S3Error("InvalidArgument", "max-keys cannot be negative")
        keys = store.keys
        index = bisect.bisect_left(keys, prefix)
        if start_after:
            index = max(index, bisect.bisect_right(keys, start_after))
        if token is not None:
            try:
                resume = base64.urlsafe_b64decode(token.encode()).decode()
            except ValueError:
                raise S3Error("InvalidArgument", "The continuation token provided is incorrect") from None
            index = max(index, bisect.bisect_left(keys, resume))

        def enc(text: str) -> str:
            return escape(quote(text, safe="/") if url else text)

        contents: list[str] = []
        prefixes: list[str] = []
        while index < len(keys) and len(contents) + len(prefixes) < max_keys:
            key = keys[index]
            if not key.startswith(prefix):
                break
            cut = key.find(delimiter, len(prefix)) if delimiter else -1
            if cut >= 0:
                common = key[: cut + len(delimiter)]
                prefixes.append(f"<CommonPrefixes><Prefix>{enc(common)}</Prefix></CommonPrefixes>")
                # Keys sharing the prefix are contiguous: jump past all of them.
                index = bisect.bisect_left(keys, common[:-1] + chr(ord(common[-1]) + 1), index)
                continue
            found = store.objects[key]
            contents.append(
                f"<Contents><Key>{enc(key)}</Key><LastModified>{_iso(found.last_modified)}</LastModified>"
                f"<ETag>{escape(found.etag)}</ETag>"
                + "".join(f"<ChecksumAlgorithm>{name}</ChecksumAlgorithm>" for name in found.checksums)
                + f"<Size>{len(found.body)}</Size>"
                "<StorageClass>STANDARD</StorageClass></Contents>"
            )
            index += 1
        truncated = max_keys > 0 and index < len(keys) and keys[index].startswith(prefix)
        parts = [
            f'<ListBucketResult xmlns="{_XMLNS}"><Name>{escape(bucket)}</Name><Prefix>{enc(prefix)}</Prefix>',
            f"<KeyCount>{len(contents) + len(prefixes)}</KeyCount><MaxKeys>{max_keys}</MaxKeys>",
        ]
        if delimiter:
            parts.append(f"<Delimiter>{enc(delimiter)}</Delimiter>")
        if url:
            parts.append("<EncodingType>url</EncodingType>")
        parts.append(f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>")
        if token is not None:
            parts.append(f"<ContinuationToken>{escape(token)}</ContinuationToken>")
        if truncated:
            next_token = base64.urlsafe_b64encode(keys[index].encode()).decode()
            parts.append(f"<NextContinuationToken>{next_token}</NextContinuationToken>")
        if start_after:
            parts.append(f"<StartAfter>{enc(start_after)}</StartAfter>")
        parts += contents
        parts += prefixes
        parts.append("</ListBucketResult>")
        return self._xml("".join(parts))

    def _list_buckets(self) -> web.StreamResponse:
        entries = "".join(
            f"<Bucket><Name>{escape(name)}</Name><CreationDate>{_iso(b.created)}</CreationDate></Bucket>"
            for name, b in sorted(self._buckets.items())
        )
        return self._xml(
            f'<ListAllMyBucketsResult xmlns="{_XMLNS}"><Owner><ID>{self.account_id}</ID></Owner>'
            f"<Buckets>{entries}</Buckets></ListAllMyBucketsResult>"
        )


def _sse_headers(sse: str | None, kms_key: str | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    if sse is not None:
        headers["x-amz-server-side-encryption"] = sse
        if sse == "aws:kms" and kms_key is not None:
            headers["x-amz-server-side-encryption-aws-kms-key-id"] = kms_key
    return headers
