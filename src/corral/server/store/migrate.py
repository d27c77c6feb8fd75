"""Bring the database schema to the newest revision.

Alembic costs ~0.4 s to import; a server start on an up-to-date database skips it by reading
`alembic_version` directly (a test holds HEAD_REVISION equal to Alembic's head).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, inspect, text

HEAD_REVISION = "0014"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
        return None if row is None else str(row[0])


def alembic_config(url: str) -> object:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(engine: Engine) -> None:
    if current_revision(engine) == HEAD_REVISION:
        return
    from alembic import command
    from alembic.config import Config

    config = alembic_config(engine.url.render_as_string(hide_password=False))
    assert isinstance(config, Config)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
