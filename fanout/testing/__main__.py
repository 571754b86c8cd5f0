"""``python -m fanout.testing [--port N] [--config FILE] [--print-config] [--model-url URL]``: the same
as ``fanout emulate``, for tests and benchmarks that start the emulator as a subprocess."""

from __future__ import annotations

import argparse
import sys

from ._server import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fanout.testing", description="Run the local SageMaker Async Inference emulator."
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free port)")
    parser.add_argument(
        "--config",
        default=None,
        help="emulator config file (JSON, or TOML by extension), applied on top of the defaults",
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the configuration as TOML and exit"
    )
    parser.add_argument(
        "--model-url",
        metavar="URL",
        default=None,
        help="forward invocations to this model server (POST /invocations, GET /ping), "
        "e.g. http://127.0.0.1:8080",
    )
    parser.add_argument(
        "--model-startup-timeout",
        metavar="SECONDS",
        type=float,
        default=None,
        help="how long to wait for the model server's GET /ping to answer 200 (default: 60)",
    )
    args = parser.parse_args(argv)
    return serve(
        port=args.port,
        config_path=args.config,
        print_config=args.print_config,
        model_url=args.model_url,
        model_startup_timeout=args.model_startup_timeout,
    )


if __name__ == "__main__":
    sys.exit(main())
