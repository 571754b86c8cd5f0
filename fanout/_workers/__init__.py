"""Sending from several worker processes, or Ray actors: the client deals, the workers invoke.

``WorkerPool`` (``_pool``) is the client's side; ``serve_worker`` (``_worker``) is a worker's;
``_messages`` is what they say; ``_process`` and ``_ray`` are the two ways to run workers.
"""

from ._launch import open_launcher
from ._pool import Launcher, WorkerPool

__all__ = ["Launcher", "WorkerPool", "open_launcher"]
