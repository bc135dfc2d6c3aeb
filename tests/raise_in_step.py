"""A plugin for self-tests: ``-p tests.raise_in_step`` with ``RV_RAISE_IN=STEP`` makes one step of a run raise an
error nothing anticipates (the way a tool, a cloud SDK or a bug would), to prove every run still writes its verdict.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import pytest

# step -> (module, attribute) replaced by a function that raises
STEPS = {
    "open_target": ("restore.session", "open_target"),
    "fetch": ("restore.backups.sources.Source", "fetch"),
    "inspect": ("restore.session", "inspect"),
    "start": ("restore.targets.embedded.EmbeddedTarget", "start"),
    "load": ("restore.session", "load_dump"),
    "catalog": ("restore.run", "read_catalog"),
    "capture": ("restore.run", "capture"),
    "inventory": ("restore.compare.inventory", "of_database"),
}


def _raise(*args: Any, **kwargs: Any) -> Any:
    raise ZeroDivisionError(f"injected into {os.environ['RV_RAISE_IN']}")


def pytest_configure(config: pytest.Config) -> None:
    step = os.environ.get("RV_RAISE_IN")
    if not step:
        return
    where, name = STEPS[step]
    module_name, _, last = where.rpartition(".")
    owner: Any = (getattr(importlib.import_module(module_name), last) if last[:1].isupper()  # a class
                  else importlib.import_module(where))
    setattr(owner, name, _raise)
