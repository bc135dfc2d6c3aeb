"""Where a backup is restored, or which existing database is verified.

``base`` holds the :class:`~restore.targets.base.Target` interface and resolves ``--target``; each kind implements
it: the embedded server (``embedded``), a container (``container``), a new RDS instance or Aurora cluster (``rds``),
an existing database (``base.ExistingTarget``); ``elsewhere`` is what a target whose server is not on this machine
says about it; ``kube`` scales the application around the restore.

May import: the shared helpers and ``restore.backups`` (a target restores a source). Never a comparison or a
record (``tests/test_layout.py``).
"""
