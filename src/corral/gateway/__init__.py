"""The inference data plane: routes requests for endpoints to their ready replicas."""

from corral.gateway.main import run_gateway
from corral.gateway.routes import HttpRouteSource, RouteSource, StaticRouteSource
from corral.gateway.server import Gateway

__all__ = ["Gateway", "HttpRouteSource", "RouteSource", "StaticRouteSource", "run_gateway"]
