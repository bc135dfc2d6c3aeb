"""The shipped example configuration parses."""

from __future__ import annotations

from restore.targets.base import load_targets_file
from tests.conftest import ROOT


def test_example_targets_file_parses_and_keeps_passwords_out() -> None:
    targets = load_targets_file(ROOT / "examples" / "targets.toml")
    assert set(targets) == {"prod-restored", "staging-replica", "scratch", "same-major-container"}
    assert targets["prod-restored"].kind == "existing"
    assert targets["prod-restored"].password_env == "PROD_RESTORED_PASSWORD"
    assert targets["scratch"].needs_restore
