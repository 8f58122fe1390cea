"""The one way ingest writes reach the database: ``Database.write(work)`` / ``write_all(works)``, which hand
the work to the database's ``GroupCommit`` (groups.py: the queue, the turn, the leader), one module a
dialect: sqlite.py (every write grouped, a savepoint each) and postgres.py (combinable work grouped on a
kept connection, the rest in parallel). failures.py: which errors are ``DatabaseUnavailable`` (503).
process_lock.py: SQLite's write lock across processes, and the announcement of ingest requests on their
way that an enrichment worker's writes give way to.
"""
