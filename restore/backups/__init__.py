"""Where a backup comes from and what it holds.

A ``--backup`` value parsed into a source (a local or S3 dump, an RDS snapshot, a base backup, pgBackRest, Barman
Cloud), fetched and read: the dump's header and table of contents, what ``pg_restore`` did with each entry, a
physical backup laid out and recovered to its end or a point in time, which snapshots an RDS instance keeps.

May import: the shared helpers at ``restore/`` top level (errors, tools, waiting, hints, untrusted, conninfo,
janitor, verify, cloud). Never a target, a comparison or a record: what a backup is does not depend on where it is
restored, how it is compared or what a run leaves (``tests/test_layout.py`` holds every package to this).
"""
