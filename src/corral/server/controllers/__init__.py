"""Reconcile loops: load a snapshot, call the pure core, apply in one transaction, notify."""
