"""python -m restore: backups with manifests, the monthly record, and cleanup.

Verification itself runs through pytest:  pytest --backup=PATH  or  pytest --target=NAME|DSN

  python -m restore manifest --dsn=DSN --output=PATH [--jobs=N] [--freshness=SQL]
  python -m restore backup   --dsn=DSN --output=FILE.dump [--jobs=N] [--freshness=SQL]
  python -m restore record   --history=reports/record.jsonl --output=DIR [--until=YYYY-MM]
  python -m restore record   --history=… --verify [--public-key=PEM | --kms]
  python -m restore record   --history=… --export=2026 [--format=md|json] [--output=FILE]
  python -m restore record annotate RUN-ID --remediation=TEXT --history=…
  python -m restore record   --history=… --overdue [--fleet=fleet.toml] [--within-days=35]
  python -m restore fleet render --fleet=fleet.toml --cronjob=deploy/kubernetes/restore-verify.yaml
  python -m restore fleet run    --fleet=fleet.toml [--index=N]
  python -m restore fleet discover --cnpg=NAMESPACE --record=s3://… [--selector=K=V] [--output=fleet.toml]
  python -m restore cleanup  [--dry-run]

manifest  writes the JSON manifest of a database (read-only, from one snapshot).
backup    takes a pg_dump -Fc and its manifest from one exported snapshot: FILE.dump and
          FILE.dump.manifest.json.
record    renders the backup-test history (one line per run) as DIR/record.html and DIR/record.md,
          verifies its hash chain and signatures, exports a year's evidence, or annotates a run.
          --overdue lists each database's last complete passing run and exits 1 when one is overdue.
fleet     many databases: render renders a Kubernetes Indexed Job (one completion index per database) from
          the CronJob; run verifies the database of one index ($JOB_COMPLETION_INDEX) with the suite;
          discover writes a fleet file with every CloudNativePG Cluster of a namespace that has backups.
cleanup   removes the local servers and containers of runs that are gone (a run killed with -9; no AWS
          needed) and deletes RDS instances restore-verify created whose expiry tag has passed; nothing
          without its tag is touched.

The DSN may omit the password: libpq's PGPASSWORD / ~/.pgpass apply (--password-env=VAR names another).
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from restore import __version__
from restore.compare import manifest
from restore.compare.capture import capture
from restore.conninfo import redact, with_params
from restore.errors import ConfigError, RestoreError
from restore.records import record
from restore.take_backup import take_backup


def _dsn(args: argparse.Namespace) -> str:
    dsn: str = args.dsn
    if args.password_env:
        password = os.environ.get(args.password_env)
        if password is None:
            raise SystemExit(f"error: ${args.password_env} is not set (named by --password-env)")
        dsn = with_params(dsn, password=password)
    return dsn


def _record_evidence(args: argparse.Namespace) -> int:
    from restore.records import evidence

    if args.action == "annotate":
        if not args.run_id or not args.remediation:
            print("error: record annotate RUN-ID --remediation TEXT --history PATH", file=sys.stderr)
            return 2
        record.annotate(args.history, args.run_id, remediation=args.remediation,
                        operator=record.operator_name(args.operator), signer=evidence.signer_for(args.record_key))
        print(f"annotated run {args.run_id} in {args.history}")
        return 0
    if args.verify:
        text = record.raw_text(args.history)
        found = evidence.verify(text, public_key=args.public_key, kms=args.kms)
        for note in found.notes:
            print(f"note: {note}")
        if found.ok:
            signed = " and signatures" if args.public_key or args.kms else ""
            print(f"record {args.history}: {found.lines} line(s); chain{signed} intact")
            return 0
        number, why = found.broken[0]
        print(f"record {args.history}: BROKEN at line {number}: {why}", file=sys.stderr)
        for number, why in found.broken[1:]:
            print(f"  also line {number}: {why}", file=sys.stderr)
        return 1
    text = evidence.export(record.load(args.history), args.export, args.format)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        print(f"evidence for {args.export} -> {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def _cleanup(*, dry_run: bool) -> int:
    """Local servers and containers whose run is gone (no AWS needed), then expired RDS instances."""
    from restore import janitor

    local = janitor.sweep(dry_run=dry_run)
    print(f"local: {len(local)} left-over server(s) or container(s)" + "".join(f"\n  {line}" for line in local))
    import boto3

    if boto3.session.Session().region_name is None:
        print("RDS: skipped — no AWS region is configured (set AWS_DEFAULT_REGION or a profile's region to clean up "
              "expired RDS instances too)")
        return 0
    from restore.targets.rds import cleanup_expired

    try:
        deleted = cleanup_expired(dry_run=dry_run)
    except Exception as exc:  # botocore's errors (no credentials, access denied): said in one line, no traceback
        print(f"RDS: not cleaned up — {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    verb = "would delete" if dry_run else "deleted"
    print(f"RDS: {verb} {len(deleted)} expired instance(s) and Aurora cluster(s): {', '.join(deleted) or 'none'}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse that names the closest option or command when one is mistyped."""

    def error(self, message: str) -> NoReturn:
        wrong = re.findall(r"(--[\w-]+)", message.split("unrecognized arguments:", 1)[1]) \
            if "unrecognized arguments:" in message else []
        choice = re.search(r"invalid choice: '([^']+)'", message)
        known = [o for action in self._all_actions() for o in action.option_strings if o.startswith("--")]
        hints = [f"{w}: did you mean {close[0]}?" for w in wrong
                 if (close := difflib.get_close_matches(w.split("=", 1)[0], known, n=1, cutoff=0.6))]
        if choice:
            commands = [c for action in self._actions for c in (action.choices or {}) if isinstance(c, str)]
            close = difflib.get_close_matches(choice.group(1), commands, n=1, cutoff=0.5)
            hints += [f"did you mean {close[0]!r}?"] if close else []
        super().error("; ".join([message, *hints]))

    def _all_actions(self) -> list[argparse.Action]:
        """This parser's options and its sub-commands' (an unknown option may belong to any of them)."""
        actions = list(self._actions)
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    actions += sub._actions
        return actions


def _discover(args: argparse.Namespace) -> int:
    """fleet discover --cnpg: one database per Cluster with object-store backups; the others said, with why."""
    from restore.backups import cnpg
    from restore.records import fleet

    if not args.record:
        print("error: fleet discover needs --record=s3://…/record.jsonl: the record every run of the fleet appends "
              "to", file=sys.stderr)
        return 2
    try:
        found = cnpg.discover(args.cnpg, args.selector)
    except RestoreError as exc:  # no API, forbidden: in words
        print(f"error: {exc}", file=sys.stderr)
        return 1
    members: list[tuple[str, str, tuple[str, ...], tuple[str, ...]]] = [
        (f"{d.namespace}/{d.name}", f"cnpg:{d.namespace}/{d.name}@latest", d.store.secrets,
         tuple(s for s in (d.store.object_store,) if s)) for d in found if d.store is not None]
    skipped = [(f"{d.namespace}/{d.name}", d.skipped or "") for d in found if d.store is None]
    for name, why in skipped:
        print(f"skipped {name}: {why}", file=sys.stderr)
    if not members:
        print(f"error: no CloudNativePG Cluster in namespace {args.cnpg}"
              f"{f' matching {args.selector}' if args.selector else ''} has object-store backups "
              f"({len(found)} found): no fleet file written", file=sys.stderr)
        return 1
    how = f"python -m restore fleet discover --cnpg={args.cnpg}" + (f" --selector={args.selector}"
                                                                    if args.selector else "")
    text = fleet.discovered(members, skipped, record=args.record, parallelism=args.parallelism or 2,
                            image=args.image, how=how)
    if args.output:
        args.output.write_text(text)
        print(f"{len(members)} cluster(s), {len(skipped)} skipped -> {args.output}", file=sys.stderr)
    else:
        print(text, end="")
    return 0


def _fleet(args: argparse.Namespace) -> int:
    import yaml

    from restore.records import fleet

    if args.action == "discover":
        return _discover(args)
    if args.fleet is None:
        print(f"error: fleet {args.action} needs --fleet=FILE (the fleet file, fleet.toml)", file=sys.stderr)
        return 2
    try:
        members = fleet.load(args.fleet)
        if args.action == "render":
            if args.cronjob is None:
                print("error: fleet render needs --cronjob=YAML (deploy/kubernetes/restore-verify.yaml)",
                      file=sys.stderr)
                return 2
            cronjob = next((d for d in yaml.safe_load_all(args.cronjob.read_text()) if d and d["kind"] == "CronJob"),
                           None)
            if cronjob is None:
                print(f"error: {args.cronjob} holds no CronJob", file=sys.stderr)
                return 2
            class _Dumper(yaml.SafeDumper):  # type: ignore[misc]  # PyYAML is untyped here
                """Multi-line strings (the fleet file in the ConfigMap) as literal blocks: line for line."""

            _Dumper.add_representer(str, lambda dumper, value: dumper.represent_scalar(
                "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None))
            text = yaml.dump_all(fleet.indexed_job(members, args.fleet.read_text(), cronjob, image=args.image),
                                 Dumper=_Dumper,
                                 sort_keys=False)
            if args.output:
                args.output.write_text(text)
                print(f"{len(members.databases)} database(s), {members.parallelism} at once -> {args.output}")
                if any(db.cnpg and not db.reads_secrets for db in members.databases):
                    print("note: a cnpg: database names no reads_secrets: its Role grants no Secret (fine for "
                          "inheritFromIAMRole; else fleet discover --cnpg writes them)", file=sys.stderr)
            else:
                print(text, end="")
            return 0
        index = args.index if args.index is not None else int(os.environ.get("JOB_COMPLETION_INDEX", "-1"))
        command = [sys.executable, "-m", "pytest", *members.pytest_args(index)]
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"fleet: database {members.databases[index].name} (index {index}): {' '.join(command[3:])}",
          file=sys.stderr, flush=True)
    # The suite itself, from its own directory (its conftest.py and checks/), with pytest's exit code.
    return subprocess.run(command, cwd=Path(__file__).resolve().parent.parent, check=False).returncode


def _overdue(args: argparse.Namespace) -> int:
    from restore.records import fleet

    try:
        members = fleet.load(args.fleet) if args.fleet else None
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    history = record.load(args.history) if str(args.history).startswith("s3://") or Path(args.history).exists() \
        else []
    within = args.within_days or (members.overdue_after_days if members else 35.0)
    expected = [d.name for d in members.databases] if members else None
    rows = fleet.status(history, now=datetime.now(UTC), within_days=within, expected=expected)
    if args.metrics is not None:
        from restore.records import signals

        signals.write_record_metrics(rows, args.metrics, within_days=within,
                                     fleet=args.fleet.stem if args.fleet else "")
        print(f"{len(rows)} database(s), {sum(r.overdue for r in rows)} overdue -> {args.metrics}")
        if not args.overdue:
            return 0
    if not rows:
        print(f"OVERDUE: {args.history} holds no complete run of any database (no data is a failure)",
              file=sys.stderr)
        return 1
    width = max(28, *(len(row.name) + 1 for row in rows))
    print(f"{'':8}{'database':{width}} {'last complete passing run':26} {'RTO s':>8} {'RPO s':>8}  last run")
    for row in rows:
        rto = "-" if row.rto_s is None else f"{row.rto_s:,.0f}"
        rpo = "-" if row.rpo_s is None else f"{row.rpo_s:,.0f}"
        flag = "OVERDUE" if row.overdue else ""
        print(f"{flag:8}{row.name:{width}} {(row.last_passed or 'never')[:19]:26} {rto:>8} {rpo:>8}  "
              f"{(row.last_run or 'never')[:19]} {row.last_outcome or ''}")
    overdue = [row.name for row in rows if row.overdue]
    if overdue:
        print(f"OVERDUE: {', '.join(overdue)}: no complete passing backup test in the last {within:g} days",
              file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m restore", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"restore-verify {__version__} (verification "
                        "itself runs through pytest: pytest --backup=PATH or --target=NAME)")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text)  # the same line in the list and in its --help

    for name, help_text, output_help in (
            ("manifest", "write the JSON manifest of a database", "where to write the manifest (JSON)"),
            ("backup", "pg_dump -Fc and its manifest from one exported snapshot",
             "the dump to write (FILE.dump); its manifest goes beside it, FILE.dump.manifest.json")):
        cmd = command(name, help_text)
        cmd.add_argument("--dsn", required=True, help="libpq connection string or URI of the source database")
        cmd.add_argument("--output", required=True, type=Path, metavar="PATH", help=output_help)
        cmd.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="connections hashing tables at once")
        cmd.add_argument("--freshness", metavar="SQL", help="query returning the newest write's timestamp (for RPO)")
        cmd.add_argument("--password-env", metavar="VAR", help="environment variable holding the password")
    rec = command("record", "render, verify, export or annotate the backup-test history")
    rec.add_argument("action", nargs="?", choices=("annotate",), help="annotate RUN-ID: add a follow-up line")
    rec.add_argument("run_id", nargs="?", metavar="RUN-ID", help="with annotate: the run followed up")
    rec.add_argument("--history", default="reports/record.jsonl",
                     help="the JSONL history (--record of the runs): a path or s3://… (default: reports/record.jsonl, "
                          "where the runs write it by default)")
    rec.add_argument("--output", type=Path, help="directory for record.html and record.md (rendering)")
    rec.add_argument("--until", metavar="YYYY-MM", help="show months up to this one (default: the current month)")
    rec.add_argument("--verify", action="store_true", help="check the hash chain, signatures and evidence files")
    rec.add_argument("--public-key", type=Path, metavar="PEM", help="with --verify: the Ed25519 public key")
    rec.add_argument("--kms", action="store_true", help="with --verify: verify KMS signatures (kms:Verify)")
    rec.add_argument("--export", metavar="YEAR", help="write one year's evidence (to --output FILE, or stdout)")
    rec.add_argument("--format", choices=("md", "json"), default="md", help="with --export (default: md)")
    rec.add_argument("--remediation", help="with annotate: what was done about the failed run")
    rec.add_argument("--operator", help="with annotate: who (default: $RESTORE_VERIFY_OPERATOR or $USER)")
    rec.add_argument("--record-key", metavar="PEM|kms:KEY-ID", help="with annotate: sign the line")
    rec.add_argument("--overdue", action="store_true",
                     help="list each database's last complete passing run; exit 1 when one is overdue")
    rec.add_argument("--metrics", type=Path, metavar="PATH",
                     help="write the record's view as Prometheus metrics (textfile): every database (all of the "
                          "fleet's, never-tested ones too), its last success and last run, overdue 0/1")
    rec.add_argument("--fleet", type=Path, metavar="FILE",
                     help="with --overdue or --metrics: every database of this fleet.toml")
    rec.add_argument("--within-days", type=float, metavar="DAYS",
                     help="with --overdue or --metrics: the policy window (default: the fleet's overdue_after_days, "
                          "else 35)")
    fleet_cmd = command("fleet", "render the fleet's Indexed Job, verify one database of it, or discover a "
                                 "namespace's CloudNativePG clusters")
    fleet_cmd.add_argument("action", choices=("render", "run", "discover"))
    fleet_cmd.add_argument("--fleet", type=Path, metavar="FILE", help="render, run: the fleet file (fleet.toml)")
    fleet_cmd.add_argument("--cnpg", metavar="NAMESPACE",
                           help="discover: the namespace whose CloudNativePG Clusters make the fleet")
    fleet_cmd.add_argument("--selector", metavar="LABELS",
                           help="discover: only Clusters with these labels (app=shop,tier=prod)")
    fleet_cmd.add_argument("--record", metavar="URL", help="discover: the fleet's record (s3://…/record.jsonl)")
    fleet_cmd.add_argument("--parallelism", type=int, metavar="N", help="discover: clusters verified at once (2)")
    fleet_cmd.add_argument("--cronjob", type=Path, metavar="YAML",
                           help="render: the CronJob manifest to take the pod from (deploy/kubernetes/…)")
    fleet_cmd.add_argument("--output", type=Path, metavar="FILE",
                           help="render, discover: write here (default: stdout)")
    fleet_cmd.add_argument("--image", metavar="IMAGE",
                           help="render: the pods' image (default: the fleet file's image, else the CronJob's); "
                                "discover: the fleet file's image")
    fleet_cmd.add_argument("--index", type=int, metavar="N",
                           help="run: the database's index (default: $JOB_COMPLETION_INDEX, set by Kubernetes)")
    clean = command("cleanup", "remove left-over local servers and containers, and expired RDS instances")
    clean.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    args = parser.parse_args(argv)
    if args.command == "cleanup":
        return _cleanup(dry_run=args.dry_run)
    if args.command == "fleet":
        return _fleet(args)
    if args.command == "record" and (args.overdue or args.metrics):
        return _overdue(args)
    if (args.command == "record" and not args.action and not str(args.history).startswith("s3://")
            and not Path(args.history).exists()):
        print(f"error: the record {args.history} was not found (the runs' --record path)", file=sys.stderr)
        return 1
    if args.command == "record" and (args.action or args.verify or args.export):
        return _record_evidence(args)
    if args.command == "record":
        if args.output is None:
            print("error: record needs --output DIR to render (or --verify, --export YEAR, annotate RUN-ID)",
                  file=sys.stderr)
            return 2
        problems: list[str] = []
        history = record.load(args.history, problems=problems)
        for problem in problems:
            print(f"warning: {problem}", file=sys.stderr)
        if not history:
            print(f"error: {args.history} holds no runs", file=sys.stderr)
            return 1
        from reports.pages import render_record  # the pages are the report's business; this is their command

        html_path, md_path = render_record(history, args.output, until=args.until, problems=problems)
        print(f"{len(history)} runs -> {html_path}, {md_path}")
        return 0
    dsn = _dsn(args)
    try:
        if args.command == "manifest":
            data = capture(dsn, jobs=args.jobs, freshness_sql=args.freshness)
            manifest.write(data, args.output)
            print(f"manifest of {redact(dsn)}: {len(data['tables'])} tables -> {args.output}")
        else:
            print(f"backup of {redact(dsn)} into {args.output} (pg_dump -Fc and the manifest, one snapshot) ...",
                  file=sys.stderr, flush=True)
            dump, manifest_path = take_backup(
                dsn, args.output, jobs=args.jobs, freshness_sql=args.freshness,
                progress=lambda line: print(f"  {line}", file=sys.stderr, flush=True))
            print(f"backup of {redact(dsn)} from one snapshot:\n  {dump}\n  {manifest_path}")
    except Exception as exc:  # the CLI's contract: one line saying what failed, never a password
        print(f"error: {args.command} of {redact(dsn)} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
