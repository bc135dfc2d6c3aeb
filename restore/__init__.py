"""restore-verify's library: restore a PostgreSQL backup into a target and describe what came back.

Nothing in this package imports pytest: the plugin in ``fixtures/`` drives it, and so can any script.
"""

from __future__ import annotations

__version__ = "0.1.0"
