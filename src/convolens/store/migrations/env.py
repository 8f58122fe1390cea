"""Alembic environment: runs on the connection that convolens.store.migrate hands it."""

from alembic import context
from sqlalchemy import create_engine

from convolens.store.tables import metadata

config = context.config


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        # `alembic revision --autogenerate` from a shell: the URL comes from -x url=...
        url = context.get_x_argument(as_dictionary=True).get("url", "sqlite:///./.convolens/dev.sqlite3")
        with create_engine(url).connect() as conn:
            _run(conn)
        return
    _run(connection)


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
