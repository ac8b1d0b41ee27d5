"""Schema versions of the results store, as Alembic revisions (versions/NNNN_*.py).

edgerob.store runs them itself when it opens a store, on its own connection and inside the
transaction that opens it (env.py; no alembic.ini), and records the revision in the table
`edgerob_schema_version`. Revision 0001 is the schema of edgerob 0.1.0, whose stores have no
version table: such a store is stamped 0001, then upgraded.

Adding a revision: change the tables in edgerob/store.py (new columns nullable, at the end), then
add versions/NNNN_<what>.py with `revision = "NNNN"`, `down_revision` = the previous head, and an
`upgrade()` written out with `op` (op.add_column for a new nullable column, op.create_table for a
table; inside `op.batch_alter_table` for what SQLite cannot ALTER in place). tests/test_store.py
(test_migrated_schema_is_store_metadata) fails, listing the differences, until the upgraded
database matches store.py.
"""
