"""Storage: tables, migrations and every query, on SQLite and PostgreSQL. Imports nothing above it."""
