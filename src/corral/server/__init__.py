"""The control plane: API, store, controllers."""
