"""The import-linter contracts in pyproject.toml name every private module they must.

``lint-imports`` (run by CI) enforces the contracts; this checks that their module lists keep up
with the package, so a new private module cannot slip past the benchmarks or testing contracts.
"""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path
from typing import Any

import fanout

ROOT = Path(__file__).resolve().parent.parent


def _contracts() -> dict[str, dict[str, Any]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {contract["name"]: contract for contract in config["tool"]["importlinter"]["contracts"]}


def _private_modules() -> set[str]:
    modules = pkgutil.iter_modules(fanout.__path__)
    return {f"fanout.{m.name}" for m in modules if m.name.startswith("_") and not m.name.startswith("__")}


def test_the_benchmarks_contract_forbids_every_private_module() -> None:
    contract = _contracts()["The benchmarks use fanout's public API and fanout.testing only"]
    assert set(contract["forbidden_modules"]) == _private_modules()


def test_the_testing_contract_forbids_every_client_side_module() -> None:
    name = "fanout.testing imports nothing from the client side but the error tree and the loop start-up"
    contract = _contracts()[name]
    allowed = {"fanout._exceptions", "fanout._loop"}
    assert set(contract["forbidden_modules"]) == _private_modules() - allowed
