"""The public face of fanout: one sorted ``__all__`` that names exactly what the package exports."""

from __future__ import annotations

import importlib

import pytest


def _isort_key(name: str) -> tuple[int, str]:
    """Constants first, then classes, then functions: the order ruff's RUF022 keeps."""
    if name.isupper():
        return (0, name)
    return (1, name) if name[:1].isupper() else (2, name)


@pytest.mark.parametrize("module_name", ["fanout", "fanout.testing", "fanout.ray"])
def test_all_is_sorted_unique_and_resolvable(module_name: str) -> None:
    module = importlib.import_module(module_name)
    names = list(module.__all__)
    assert names == sorted(names, key=_isort_key)
    assert len(names) == len(set(names))
    for name in names:
        assert hasattr(module, name), f"{module_name}.{name} is in __all__ but missing"


def test_every_public_attribute_is_in_all() -> None:
    import fanout

    public = {
        name
        for name, value in vars(fanout).items()
        if not name.startswith("_") and not isinstance(value, type(fanout))
    }
    assert public <= set(fanout.__all__) | {"annotations"}


def test_private_modules_are_not_exported() -> None:
    import fanout

    assert not [name for name in fanout.__all__ if name.startswith("_")]


def test_typed_marker_ships() -> None:
    from importlib.resources import files

    assert files("fanout").joinpath("py.typed").is_file()
