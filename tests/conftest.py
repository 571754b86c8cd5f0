"""Shared fixtures: every async test runs on asyncio and on asyncio+uvloop, with a clean AWS environment."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

_BACKENDS: list[Any] = [pytest.param(("asyncio", {}), id="asyncio")]
if sys.platform != "win32":
    _BACKENDS.append(pytest.param(("asyncio", {"use_uvloop": True}), id="asyncio+uvloop"))


@pytest.fixture(params=_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


@pytest.fixture(autouse=True)
def _isolated_aws_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Never let a developer's real AWS configuration leak into a test."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "FANOUT_")):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    yield


@pytest.fixture(scope="session")
def local_ray() -> Iterator[Any]:
    """One local Ray (``num_cpus=2``) for the whole session, shut down at its end; skips without Ray.

    It starts with no AWS_* or FANOUT_* variable, so its workers never see a developer's real AWS
    configuration, and they never see a test's either: pass an emulator's variables to the actors
    (``runtime_env={"env_vars": emulator_env}`` in ``map_batches`` or ``.options()``).
    """
    ray = pytest.importorskip("ray", reason="needs Ray: pip install 'fanout[ray]'")
    import logging
    import warnings

    # Ray's start-up warns about its own defaults (DataContext's deprecated fields, GPU env vars)
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in list(os.environ):
            if name.startswith(("AWS_", "FANOUT_", "RAY_ADDRESS")):
                patch.delenv(name, raising=False)
        patch.setenv("AWS_CONFIG_FILE", "/dev/null")
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
        pytest.importorskip("ray.data").DataContext.get_current().enable_progress_bars = False
    try:
        yield ray
    finally:
        ray.shutdown()
