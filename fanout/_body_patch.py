"""Add the inline ``Body`` member to InvokeEndpointAsync when the installed botocore lacks it.

botocore gained ``Body`` (raw HTTP payload, at most 128,000 bytes) in 1.43.29;
aioboto3 15.5.0 pins aiobotocore 2.25.1 and so botocore 1.40.x, whose model
has no ``Body`` and still requires ``InputLocation``. The patch edits the
service-model dict that a session's loader memoises (``Loader.load_service_model``
is ``@instance_cache``), so every client the session creates afterwards sends
``Body`` exactly as botocore 1.43.29+ does: the raw bytes as the HTTP body and
the MIME type only in ``X-Amzn-SageMaker-Content-Type``. On a botocore that
already has ``Body`` it changes nothing.

Apply it to a session *before* creating the client. A client created earlier
is patched too, as long as it has not built its operation model yet.
"""

from __future__ import annotations

from typing import Any

__all__ = ["add_body_member", "ensure_body_member"]

_SERVICE = "sagemaker-runtime"
_INPUT = "InvokeEndpointAsyncInput"
_OPERATION = "InvokeEndpointAsync"


def add_body_member(service_model: dict[str, Any]) -> bool:
    """Add ``Body`` to a sagemaker-runtime service-model dict in place; returns whether it changed it."""
    shapes = service_model["shapes"]
    shape = shapes[_INPUT]
    if "Body" in shape["members"]:
        return False
    shapes.setdefault("AsyncBodyBlob", {"type": "blob", "max": 128000, "sensitive": True})
    shape["members"]["Body"] = {"shape": "AsyncBodyBlob"}
    # rest-json sends the member named by "payload" as the raw HTTP body when it is a blob.
    shape["payload"] = "Body"
    shape["required"] = [name for name in shape.get("required", []) if name != "InputLocation"]
    return True


def _botocore_session(session: Any) -> Any:
    # aioboto3.Session and boto3.Session wrap a (aio)botocore session in ``_session``.
    inner = getattr(session, "_session", None)
    if inner is not None and hasattr(inner, "get_component"):
        return inner
    if hasattr(session, "get_component"):
        return session
    raise TypeError(
        f"expected an aiobotocore/botocore session, an aioboto3/boto3 Session or a client, got {session!r}"
    )


def ensure_body_member(target: Any) -> bool:
    """Make ``target`` send inline ``Body``; returns whether a patch was needed.

    ``target`` is an aiobotocore (or botocore) session, an aioboto3 (or boto3)
    ``Session``, or a sagemaker-runtime client.
    """
    meta = getattr(target, "meta", None)
    service_model = getattr(meta, "service_model", None)
    if service_model is not None:
        return _patch_client_model(service_model)
    loader = _botocore_session(target).get_component("data_loader")
    return add_body_member(loader.load_service_model(_SERVICE, "service-2"))


def _patch_client_model(service_model: Any) -> bool:
    description = getattr(service_model, "_service_description", None)
    if not isinstance(description, dict) or _INPUT not in description.get("shapes", {}):
        raise TypeError(f"not a sagemaker-runtime client model: {service_model!r}")
    changed = add_body_member(description)
    if changed:
        # Drop shapes and operation models resolved from the unpatched dict.
        cache = getattr(service_model, "_instance_cache", None)
        if isinstance(cache, dict):
            cache.clear()
        resolver_cache = getattr(getattr(service_model, "_shape_resolver", None), "_shape_cache", None)
        if isinstance(resolver_cache, dict):
            resolver_cache.clear()
    return changed
