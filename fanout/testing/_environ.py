"""Point the standard AWS configuration chain at an emulator for the length of a block."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

__all__ = ["aws_environment"]


@contextmanager
def aws_environment(env: Mapping[str, str]) -> Iterator[None]:
    """Set ``env`` (for example ``emulator.env``) in ``os.environ`` for the block, then restore it.

    Clients made inside the block find the emulator through ``AWS_ENDPOINT_URL`` and friends,
    exactly as they would find real AWS, with no ``endpoint_url`` argument anywhere.
    """
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
