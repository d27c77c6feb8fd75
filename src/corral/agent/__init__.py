"""The node agent: registers the node, keeps one channel to the control plane, runs replicas.

Deliberately empty of imports: `python -m corral.agent.shim` runs once per replica and must
not pay for pydantic, websockets or psutil.
"""
