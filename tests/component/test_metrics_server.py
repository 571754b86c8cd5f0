"""``serve_metrics``: serves ``/metrics`` while its block lasts, then lets the port go; a port that
cannot be bound is a ``ConfigError`` that names it."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, Counter

from fanout import ConfigError
from fanout._metrics import INSTALL_HINT, metrics_for, serve_metrics

pytestmark = pytest.mark.anyio

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


async def test_metrics_are_served_while_the_block_lasts(taken_port: int) -> None:
    registry = CollectorRegistry()
    metrics_for(registry)
    Counter("host_requests", "the host's own metric, on the same registry", registry=registry).inc(3)
    async with aiohttp.ClientSession() as http:
        async with serve_metrics(registry, port=0) as server:
            assert server.address == "127.0.0.1" and server.port not in (0, taken_port)
            async with http.get(server.url) as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/plain; version=")
                text = await response.text()
            assert 'fanout_outcomes_total{status="succeeded"} 0.0' in text
            assert "host_requests_total 3.0" in text
            async with http.get(server.url, headers={"Accept": OPENMETRICS}) as response:
                assert response.headers["Content-Type"].startswith("application/openmetrics-text")
                assert (await response.text()).endswith("# EOF\n")
            async with http.get(server.url.removesuffix("metrics")) as response:
                assert response.status == 404
        with pytest.raises(aiohttp.ClientConnectionError):
            async with http.get(server.url):
                pass
    # Nothing listens on the port any more (its closed connections may linger in TIME_WAIT, which
    # SO_REUSEADDR allows, as any server sets it; a listener still there would not be).
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", server.port))
        sock.listen()


async def test_a_taken_port_is_a_config_error_that_names_it(taken_port: int) -> None:
    with pytest.raises(ConfigError) as caught:
        async with serve_metrics(CollectorRegistry(), port=taken_port):
            pytest.fail("served on a taken port")
    error = caught.value
    assert error.field == "port"
    assert str(error).startswith(f"port {taken_port} is already in use on 127.0.0.1")
    named = error.naming({"port": "--metrics-port"})
    assert named.startswith(f"--metrics-port {taken_port} is already in use")


@pytest.mark.parametrize(
    ("port", "address", "field"),
    [
        (-1, "127.0.0.1", "port"),
        (65536, "127.0.0.1", "port"),
        (True, "127.0.0.1", "port"),
        ("9100", "127.0.0.1", "port"),
        (0, "", "address"),
        (0, "203.0.113.7", "address"),  # TEST-NET-3: no interface here has it
    ],
)
async def test_what_cannot_be_bound_is_a_config_error(port: object, address: str, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        async with serve_metrics(CollectorRegistry(), port=port, address=address):  # type: ignore[arg-type]
            pytest.fail("served")
    assert caught.value.field == field


async def test_without_the_extra_serving_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = CollectorRegistry()
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ConfigError, match=r"pip install 'fanout\[metrics\]'") as caught:
        async with serve_metrics(registry, port=0):
            pytest.fail("served")
    assert INSTALL_HINT in str(caught.value)
