"""`python -m corral.server`: the control plane without the CLI (used by tests and services)."""

from __future__ import annotations

import argparse
from pathlib import Path

from corral.server.config import DEFAULT_PORT, ServerOptions, default_home
from corral.server.main import serve


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m corral.server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--home", type=Path, default=None)
    args = parser.parse_args()
    serve(ServerOptions.from_env(host=args.host, port=args.port, home=args.home or default_home()))


if __name__ == "__main__":
    main()
