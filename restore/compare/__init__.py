"""What a database holds, and how two compare.

``manifest`` is the format (a JSON document of schema, counts, checksums, sequences); ``capture`` reads it from a
database, ``content`` hashes the rows (checksums, buckets, large objects), ``comparison`` words what differs between
two manifests; ``inventory`` is pg_dump's own list of every object, ``fidelity`` the behaviour of objects (privileges,
ownership, settings), ``catalog`` what the checks read once, ``origin`` whether a difference was in the backup or made
by the restore, ``expectations`` the user's own rules.

May import: the shared helpers and ``restore.backups`` (a dump's table of contents and header). Never a target or a
record: a comparison is the same whatever server holds the copy (``tests/test_layout.py``).
"""
