"""`python -m corral.serve app.py:Class [--host H] [--port P]`: what `corral serve` runs."""

import argparse

from corral.serve.run import TargetError, serve_app

parser = argparse.ArgumentParser(prog="python -m corral.serve")
parser.add_argument("target", help="FILE.py:Class or package.module:Class")
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, default=8000)
parser.add_argument(
    "--readiness-path",
    default=None,
    help="where readiness is answered (default: the class's readiness_path, else /health)",
)
args = parser.parse_args()
try:
    serve_app(args.target, args.host, args.port, readiness_path=args.readiness_path)
except TargetError as exc:
    parser.error(str(exc))
