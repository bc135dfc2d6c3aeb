"""The restore_command of a recovery: "not in the archive" apart from "could not read the archive".

PostgreSQL takes *any* failing restore_command for "no such file": with no recovery target it then ends recovery
there and promotes. A WAL fetch that failed for the network, the credentials or the tool (a cut connection to S3, a
throttled request) would be taken for the end of the archive — recovery promoted early, and the suite's comparison
with the archive's listing would call it a gap in the backup: the verifier's fault blamed on the backup.

So the backup tool's own command runs inside a small wrapper. The tools say "not in the archive" with exit code 1
(``barman-cloud-wal-restore``: OperationErrorExit; ``pgbackrest archive-get``: 1); that is passed on unchanged.
Any other failure is tried again (3 more times, 1 + 2 + 3 s apart: a blip passes; a tool killed by a signal, as a
shutdown does, is not), then the wrapper writes a line
naming the file to the server's log and exits with a code over 125, which makes PostgreSQL stop recovery instead of
promoting (its rule for a restore_command that fails other than by "not found"); :func:`fault` reads that line
back. A ``cp`` from a local directory (``basebackup:``) is not wrapped: cp says 1 for a missing file and for a
permission error alike (the permission error is read from the log instead, see ``physical.explain``).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from restore.errors import VerifierFault

SCRIPT_NAME = "restore-verify-fetch-wal.sh"
MARK = "restore-verify: could not fetch WAL file"
ATTEMPTS = 4
STOP_CODE = 200  # over 125: PostgreSQL stops recovery (FATAL) rather than taking the file for missing

SCRIPT = f"""#!/bin/sh
# restore-verify: fetch one WAL file with the backup tool's own command (the arguments after the file's name).
# Exit 1 is the tool's "not in the archive" and is passed on; any other failure is tried again, then stops recovery
# (exit {STOP_CODE}) instead of being taken for the end of the archive.
name="$1"
shift
attempt=1
while :; do
  "$@"
  rc=$?
  if [ "$rc" -le 1 ]; then exit "$rc"; fi
  if [ "$rc" -gt 128 ]; then break; fi  # killed by a signal (a shutdown's SIGTERM): not tried again
  if [ "$attempt" -ge {ATTEMPTS} ]; then break; fi
  sleep "$attempt"
  attempt=$((attempt + 1))
done
echo "{MARK} $name: the restore command failed $attempt times (last exit code $rc)" >&2
if [ "$rc" -gt 128 ]; then exit "$rc"; fi
exit {STOP_CODE}
"""


def wrapped(workdir: Path, command: list[str]) -> str:
    """``command`` (the tool and its options, to be followed by ``%f "%p"``) as a restore_command that tells a
    failure to read the archive from a file the archive does not have. The script is written into ``workdir`` (the
    server's own folder, beside its data directory), readable and runnable by the server's user."""
    script = workdir / SCRIPT_NAME
    script.write_text(SCRIPT)
    script.chmod(0o755)
    return f"{shlex.quote(str(script))} %f {shlex.join(command)} %f \"%p\""


def fault(log: str, archive: str) -> VerifierFault | None:
    """A recovery stopped by the wrapper (the archive could not be read), in words; None when it was not."""
    found = re.search(rf"^{re.escape(MARK)} (\S+): the restore command failed (\d+) times \(last exit code (\d+)\)",
                      log, re.M)
    if found is None:
        return None
    name, attempts, code = found.groups()
    # The tool's own last words, printed just before the mark (its error, not the server's LOG lines).
    before = [line.strip() for line in log[:found.start()].splitlines()[-12:] if line.strip()]
    said = next((line for line in reversed(before) if not re.match(r"\d{4}-\d\d-\d\d ", line)), "")
    return VerifierFault(
        f"Recovery was stopped because {archive} could not be read when recovery asked for WAL file {name}: the "
        f"backup tool's restore command failed {attempts} times (exit code {code}; "
        f"{said[:300] or 'its words are in the server log'}). That is the network, the credentials or the tool, "
        "not a file missing from the archive, so nothing is known against the backup: check that the archive can "
        "be read from here, then run again.")
