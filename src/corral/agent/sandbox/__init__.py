"""How a replica is confined on a node: see README.md beside this file."""
