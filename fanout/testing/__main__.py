"""``python -m fanout.testing [--port N] [--config FILE]``: the same as ``fanout emulate``."""

from __future__ import annotations

import argparse
import sys

from ._server import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fanout.testing", description="Run the local SageMaker Async Inference emulator."
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free port)")
    parser.add_argument("--config", default=None, help="emulator config file (JSON, or TOML by extension)")
    args = parser.parse_args(argv)
    return serve(port=args.port, config_path=args.config)


if __name__ == "__main__":
    sys.exit(main())
