"""restore_succeeded: the backup was read end to end and restored with no unaccepted errors."""

from __future__ import annotations

import pytest

from fixtures.outcomes import not_applicable, owner_says
from restore.backups.outcome import PreparedDatabase, RestoreOutcome

pytestmark = pytest.mark.checklist("restore_succeeded")


def _require_restore(prepared_db: PreparedDatabase) -> RestoreOutcome:
    if not prepared_db.restore.performed:
        pytest.skip("existing target: this run restored nothing, so there is no restore to judge (to test the "
                    "restore too, run with --backup=… and the default target, or --target=docker)")
    if prepared_db.restore.verifier_fault:  # not evidence either way: said once, in the verdict
        pytest.skip("not run: the verifier could not restore the backup (see the verdict)")
    return prepared_db.restore


def test_backup_readable_and_restore_ran(prepared_db: PreparedDatabase) -> None:
    """The whole backup was readable (every data block) and the restore ran to its end."""
    outcome = _require_restore(prepared_db)
    if outcome.refused:
        pytest.fail(f"The restore did not run. {outcome.refused}", pytrace=False)


def test_no_unaccepted_restore_errors(prepared_db: PreparedDatabase) -> None:
    """pg_restore/psql reported no error that is not on the allow-list (accepted ones are listed, not hidden)."""
    outcome = _require_restore(prepared_db)
    if outcome.refused:
        not_applicable("the restore did not run (see test_backup_readable_and_restore_ran)")
    errors = list(outcome.errors)
    accepted = list(outcome.accepted_errors)
    if errors:
        shown = "\n".join(f"  {i}. {e}" for i, e in enumerate(errors[:20], 1))
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        diagnosis = "".join(f"{d}\n" for d in outcome.diagnosis)
        pytest.fail(
            f"{diagnosis}The restore reported {len(errors)} unaccepted error(s) ({len(accepted)} accepted), exit "
            f"code {outcome.exit_code}; objects or rows named below are missing or incomplete:\n{shown}{more}\n"
            f"Full output: {outcome.log_path}. Fix the backup or the target; to accept a known-harmless error "
            "pass --allow-restore-error=REGEX (ini: allow_restore_error).",
            pytrace=False,
        )
    assert outcome.exit_code == 0 or accepted, f"restore exited with {outcome.exit_code} and no error text"


def test_recovery_reached_the_end_of_the_archive(prepared_db: PreparedDatabase) -> None:
    """Recovered to the end of its WAL: that end is the archive's, proven from a listing that holds every segment
    recovery replayed (an empty or foreign listing proves nothing, and leaves the item incomplete)."""
    outcome = _require_restore(prepared_db)
    if outcome.refused:
        not_applicable("the restore did not run (see test_backup_readable_and_restore_ran)")
    archive = prepared_db.archive
    if archive is None or archive.recovery_end_proven is None:
        not_applicable("no recovery to the end of a WAL archive in this run")
    if not archive.recovery_end_proven:
        pytest.skip(archive.recovery_end or "the end of recovery could not be proven")


def test_cloudnativepg_says_its_newest_backup_completed(prepared_db: PreparedDatabase) -> None:
    """A CloudNativePG cluster (cnpg:): its newest finished Backup completed. One that failed is said, never silently
    stepped over to the older backup this run restored."""
    owner_says(prepared_db.archive, "restore_succeeded")
