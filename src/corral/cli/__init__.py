"""The `corral` command line: one module per noun, assembled in `main`."""
