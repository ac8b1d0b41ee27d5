"""Alembic environment: run by edgerob.store on the connection it passes in
`config.attributes["connection"]`, inside the transaction that opens the store."""

from alembic import context

from edgerob.store import VERSION_TABLE, include_name, metadata

context.configure(connection=context.config.attributes["connection"], target_metadata=metadata,
                  version_table=VERSION_TABLE, include_name=include_name, render_as_batch=True,
                  transactional_ddl=True)
with context.begin_transaction():  # a no-op: the store's transaction is already open
    context.run_migrations()
