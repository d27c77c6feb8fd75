"""Serve a Python class over HTTP: decorated methods become routes (`corral serve app.py:Cls`)."""

from corral.serve.app import BadRequest, build_app
from corral.serve.decorators import handler, setup
from corral.serve.run import load_target, serve_app

__all__ = ["BadRequest", "build_app", "handler", "load_target", "serve_app", "setup"]
