"""`python -m corral.serve app.py:Class [--host H] [--port P]`: what `corral serve` runs."""

import argparse

from corral.serve.run import TargetError, serve_app

parser = argparse.ArgumentParser(prog="python -m corral.serve")
parser.add_argument("target", help="FILE.py:Class or package.module:Class")
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, default=8000)
args = parser.parse_args()
try:
    serve_app(args.target, args.host, args.port)
except TargetError as exc:
    parser.error(str(exc))
