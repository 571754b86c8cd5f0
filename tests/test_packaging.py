"""Packaging: what ``pip install -e .`` leaves behind must be visible to type checkers too."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_installed_package_is_on_a_plain_path_that_type_checkers_follow(tmp_path: Path) -> None:
    # mypy and pyright look for packages on sys.path entries, site-packages and .pth files; they
    # cannot see an import hook (setuptools' default editable install). From a folder outside the
    # checkout, with no PYTHONPATH, some such entry must hold fanout/__init__.py.
    code = (
        "import os, sys; print([p for p in sys.path "
        "if p and os.path.isfile(os.path.join(p, 'fanout', '__init__.py'))])"
    )
    found = subprocess.run(
        [sys.executable, "-I", "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    assert found.strip() not in ("", "[]"), "fanout is importable only through an import hook"


def test_the_license_is_an_spdx_expression() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    assert os.path.isfile(ROOT / "fanout" / "py.typed")
