"""The store: SQLAlchemy tables, sessions and migrations. The store is the truth."""
