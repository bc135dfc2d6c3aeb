"""Barman Cloud: ``--backup=barman-cloud:s3://BUCKET/PREFIX/SERVER[@TIME|@latest][?endpoint=URL&db=NAME]``.

The layout CloudNativePG and ``barman-cloud-backup`` write: ``s3://BUCKET/PREFIX`` is the destination path and
``SERVER`` the server name (the cluster's name in CloudNativePG). The backup for the target is picked from
``barman-cloud-backup-list`` (the newest one that ended before it), downloaded with ``barman-cloud-restore`` into the
private data directory, and its WAL fetched during recovery by ``barman-cloud-wal-restore``, run by the recovering
server. S3 credentials come the standard boto3 way (``AWS_*`` variables, profiles, roles); ``endpoint=URL`` (or
``AWS_ENDPOINT_URL``) points at an S3-compatible store.

The ``barman-cloud-*`` tools must be on PATH and runnable by the server's user (embedded_postgres when the suite runs
as root: a Python under /root is not). Versions: any Barman Cloud that reads the backup; the backup recovers into a
server of its own major (see ``physical.server_binaries``).
"""

from __future__ import annotations

import functools
import json
import os
import posixpath
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from restore.backups import walfetch
from restore.backups.physical import RecoveryFailed, RecoveryTarget, RunAsOwner, prepare_recovery, recovery_settings
from restore.errors import ArchiveUnreadable, ConfigError, VerifierFault
from restore.tools import clean_env


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ConfigError(f"Barman Cloud is not installed here ({name} is not on PATH): a barman-cloud: backup is read "
                          "with Barman's own tools. Install them (pip install 'barman[cloud]' into a Python every "
                          "user can run, or apt install barman-cli-cloud) and put their bin directory on PATH.")
    return found


def split_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix/SERVER`` → (``s3://bucket/prefix``, ``SERVER``)."""
    source, _, server = url.rstrip("/").rpartition("/")
    if not url.startswith("s3://") or not server or source in ("s3:", "s3:/"):
        raise ConfigError.invalid("Barman Cloud backup", url, "--backup",
                                  "Write barman-cloud:s3://BUCKET/PREFIX/SERVER (the destination path and the server "
                                  "name barman-cloud-backup was given).")
    return source, server


def s3_prefix(url: str, *parts: str) -> tuple[str, str]:
    """(bucket, key prefix) of ``SERVER/parts…`` built exactly as Barman Cloud builds it: the destination path's
    key without its leading slashes, joined with ``os.path.join`` (so ``s3://b/plugin//SERVER`` — a destination path
    written with a trailing slash — is ``plugin/SERVER``, as Barman reads it, not ``plugin//SERVER``)."""
    source, server = split_url(url)
    parsed = urlparse(source)
    return parsed.netloc, posixpath.join(parsed.path.lstrip("/"), server, *parts)


# What Barman (boto3) says when the verifier's own world stops it: credentials, the network. Not the backup's fault.
_VERIFIER_FAULTS = (
    ("Unable to locate credentials", "no S3 credentials were found (boto3 looked for AWS_ACCESS_KEY_ID and "
     "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws/credentials and an instance or pod role)"),
    ("InvalidAccessKeyId", "the S3 store does not know the access key the verifier uses"),
    ("SignatureDoesNotMatch", "the S3 secret key does not match its access key"),
    ("ExpiredToken", "the verifier's S3 session token has expired"),
    ("AccessDenied", "the verifier's S3 identity may not list or read this bucket (s3:ListBucket, s3:GetObject)"),
    ("Access Denied", "the verifier's S3 identity may not list or read this bucket (s3:ListBucket, s3:GetObject)"),
    ("Could not connect to the endpoint URL", "the S3 endpoint cannot be reached from here"),
    ("EndpointConnectionError", "the S3 endpoint cannot be reached from here"),
    ("Connect timeout", "the S3 endpoint did not answer in time"),
    ("Read timeout", "the S3 endpoint did not answer in time"),
)
_LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:,\d+)? \[\d+\] [A-Z]+: ")


def _last_words(output: str) -> str:
    """The tool's last line without its log prefix (time stamp, process id, level): what it said, in its words."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return _LOG_PREFIX.sub("", lines[-1]) if lines else "no output"


OWN_IDENTITY_FIX = ("give the suite credentials that can list and read the bucket (the AWS_* variables, a profile or "
                    "a role) and a reachable endpoint (endpoint=URL or AWS_ENDPOINT_URL)")


def _verifier_fault(tool: str, url: str, output: str, fix: str = OWN_IDENTITY_FIX) -> VerifierFault | None:
    """A Barman Cloud tool that failed because of the verifier's credentials or network, in words; else None."""
    for words, meaning in _VERIFIER_FAULTS:
        if words in output:
            return VerifierFault(f"{tool} could not read {url}: {meaning}. This is the verifier's configuration, "
                                 f"not the backup: {fix}, then run again.")
    return None


def by_end_time(backups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Listed backups, oldest first, by the moment each ended (parsed, not compared as text)."""
    return sorted(backups, key=_ended)


def _ended(backup: dict[str, Any]) -> datetime:
    """When a listed backup ended, as a moment (Barman's ISO times may carry different UTC offsets, e.g. across a
    daylight-saving change: compared as text, the newest could be the wrong one)."""
    try:
        ended = datetime.fromisoformat(str(backup.get("end_time_iso") or ""))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return ended if ended.tzinfo else ended.replace(tzinfo=UTC)


# The S3 identity of the environment, set aside when the backup brings its own (a CloudNativePG Secret's keys): a
# mix of the operator's session token and the Secret's key pair would sign with neither.
AWS_IDENTITY = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                "AWS_PROFILE", "AWS_DEFAULT_PROFILE")


@dataclass(frozen=True)
class BarmanCloud:
    url: str  # s3://bucket/prefix/SERVER
    endpoint: str | None
    target: RecoveryTarget
    format: str = "barman-cloud"
    # AWS_* for the tools and the recovering server, from where the backup is described (never logged, never
    # compared); empty: the environment's own identity, the boto3 way.
    credentials: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    pin: str | None = None  # the backup id to restore without a time target (else the newest finished one)

    @property
    def label(self) -> str:
        return f"Barman Cloud {self.url}"

    @property
    def archive(self) -> str:
        return f"the Barman Cloud WAL archive {self.url}/wals"

    def _endpoint(self) -> list[str]:
        endpoint = self.endpoint or os.environ.get("AWS_ENDPOINT_URL")
        return ["--endpoint-url", endpoint] if endpoint else []

    def _where(self) -> list[str]:
        return list(split_url(self.url))

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """The environment the tools and the recovering server run with: ``base`` with the backup's own S3
        identity, when it brings one, in place of the environment's."""
        if not self.credentials:
            return dict(base)
        return {k: v for k, v in base.items() if k not in AWS_IDENTITY} | dict(self.credentials)

    @property
    def fix(self) -> str:
        """What to do when the store refuses the identity or cannot be reached (CloudNativePG's: its Secret)."""
        return OWN_IDENTITY_FIX

    def about(self) -> dict[str, Any] | None:
        """What the backup's owner says about it beyond the backup itself (CloudNativePG's cluster): none here."""
        return None

    def backups(self) -> list[dict[str, Any]]:
        done = subprocess.run([_tool("barman-cloud-backup-list"), "--format=json", *self._endpoint(), *self._where()],
                              capture_output=True, text=True, env=self.environment(clean_env()), timeout=600)
        try:
            listed = json.loads(done.stdout).get("backups_list", []) if done.returncode == 0 else None
        except json.JSONDecodeError:
            listed = None
        if listed is None:
            fault = _verifier_fault("barman-cloud-backup-list", self.url, done.stderr or done.stdout, self.fix)
            if fault is not None:
                raise fault
            raise ArchiveUnreadable(f"barman-cloud-backup-list cannot read {self.url}: "
                                    f"{_last_words(done.stderr or done.stdout)}. Check the URL (the destination path, "
                                    "then the server name), the endpoint and the credentials.",
                                    detail=done.stderr)
        finished = [b for b in listed if b.get("status") == "DONE"]
        if not finished:
            raise ArchiveUnreadable(f"{self.url} holds no finished backup ({len(listed)} listed, none DONE): check "
                                    "the server name and that barman-cloud-backup completed.")
        return by_end_time(finished)

    @functools.cached_property
    def chosen(self) -> dict[str, Any]:
        """The backup recovery starts from: the newest one that ended before a time target, else the newest (listed
        once: each listing is a process and an S3 listing)."""
        backups = self.backups()
        if self.target.time is None and self.pin is not None:
            pinned = [b for b in backups if b.get("backup_id") == self.pin]
            if not pinned:
                raise ArchiveUnreadable(f"Backup {self.pin} is said to be complete, but {self.url} lists no finished "
                                        f"backup of that id ({len(backups)} finished listed: "
                                        f"{', '.join(str(b.get('backup_id')) for b in backups[-5:])}): its files are "
                                        "gone from the object store, or were never written there. Nothing was "
                                        "restored.")
            return pinned[-1]
        if self.target.time is None:
            return backups[-1]
        before = [b for b in backups if _ended(b) < self.target.time]
        if not before:
            raise RecoveryFailed(f"The recovery target {self.target} is before the end of every backup in {self.url} "
                                 f"(the oldest ended at {backups[0]['end_time_iso']}): a backup recovers only to "
                                 "moments after it finished. Choose a later target, or keep backups for longer. "
                                 "Nothing was restored.")
        return before[-1]

    def major(self) -> str:
        version = int(self.chosen.get("version", 0))
        return str(version // 10000 if version >= 100000 else version // 100)

    def verify(self) -> list[str]:
        backup = self.chosen
        return [f"$ barman-cloud-backup-list {self.url}",
                f"barman-cloud: backup {backup['backup_id']} finished at {backup['end_time_iso']} (status DONE, WAL "
                f"{backup.get('begin_wal')} to {backup.get('end_wal')}); Barman Cloud has no verify command: its files "
                "are checked as they are restored, its WAL as recovery replays it"]

    def wal_segments(self) -> set[str] | None:
        """Every WAL segment and history file under SERVER/wals/, listed where Barman Cloud reads them (one S3
        listing, every page; the prefix built as Barman builds it)."""
        import boto3  # only Barman Cloud sources list S3 here

        bucket, prefix = s3_prefix(self.url, "wals")
        endpoint = self.endpoint or os.environ.get("AWS_ENDPOINT_URL")
        identity = {"aws_access_key_id": self.credentials.get("AWS_ACCESS_KEY_ID"),
                    "aws_secret_access_key": self.credentials.get("AWS_SECRET_ACCESS_KEY"),
                    "aws_session_token": self.credentials.get("AWS_SESSION_TOKEN"),
                    "region_name": self.credentials.get("AWS_DEFAULT_REGION")} if self.credentials else {}
        client = boto3.client("s3", **({"endpoint_url": endpoint} if endpoint else {}), **identity)
        names = set()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
            for item in page.get("Contents", []):
                m = re.match(r"([0-9A-F]{24}|[0-9A-F]{8}\.history)(\.\w+)?$", item["Key"].rsplit("/", 1)[-1])
                if m:
                    names.add(m.group(1))
        return names

    def fill(self, datadir: Path, run: RunAsOwner) -> dict[str, str]:
        backup = self.chosen
        restore = [_tool("barman-cloud-restore"), *self._endpoint(), *self._where(), backup["backup_id"], str(datadir)]
        try:
            done = run(restore)
        except PermissionError as exc:
            raise ConfigError(f"{restore[0]} cannot be run by the server's user (embedded_postgres when the suite "
                              "runs as root): the recovering server runs barman-cloud-wal-restore itself. Install "
                              "Barman Cloud where every user can run it (a venv made with /usr/bin/python3 under /opt, "
                              "or apt install barman-cli-cloud).") from exc
        if done.returncode != 0:
            fault = _verifier_fault("barman-cloud-restore", self.url, done.stderr or done.stdout, self.fix)
            if fault is not None:
                raise fault
            raise ArchiveUnreadable(f"barman-cloud-restore of backup {backup['backup_id']} from {self.url} failed: "
                                    f"{_last_words(done.stderr or done.stdout)}.", detail=done.stderr)
        prepare_recovery(datadir)
        # "Not in the archive" apart from "could not read it": a cut connection must not end recovery (walfetch.py).
        command = walfetch.wrapped(datadir.parent, [_tool("barman-cloud-wal-restore"), *self._endpoint(),
                                                    *self._where()])
        return recovery_settings(command, self.target)
