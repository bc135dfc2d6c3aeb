"""What a run leaves: the monthly record (``record``, hash-chained and signed by ``evidence``), the signals sent to
monitoring (``signals``: metrics, Pushgateway, heartbeat) and the fleet of databases a team verifies (``fleet``).

May import: the shared helpers only. A record holds what a run found; it never restores or compares
(``tests/test_layout.py``).
"""
