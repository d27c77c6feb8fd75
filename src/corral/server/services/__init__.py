"""Use cases: each a transaction boundary over the store. No network calls inside."""
