"""Uploaded working directories: the per-workspace, content-addressed store (store.py) and
what the API does with it (service.py)."""
