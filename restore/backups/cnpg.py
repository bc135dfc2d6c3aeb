"""CloudNativePG by name: ``--backup=cnpg:NAMESPACE/CLUSTER[@TIME|@latest][?db=NAME]``.

The Cluster (``postgresql.cnpg.io/v1``) is read through the Kubernetes API (the pod's ServiceAccount, else the
kubeconfig) and restored with the Barman Cloud path (barman.py: the same point-in-time recovery, the same proof of
the end of recovery). Its object store comes from either form CloudNativePG has used:

- in-tree, ``spec.backup.barmanObjectStore`` (destinationPath, endpointURL, s3Credentials, serverName);
- the Barman Cloud plugin, ``spec.plugins[]`` naming ``barman-cloud.cloudnative-pg.io`` with ``barmanObjectName``
  (an ``ObjectStore`` of ``barmancloud.cnpg.io/v1`` whose ``spec.configuration`` has the in-tree shape) and
  ``serverName`` among its parameters.

``s3Credentials`` name Secrets of the cluster's namespace: their values reach the Barman tools and the recovering
server through the environment only (never a file, a command line, a log, the record or result.json, which name
the Secret and its keys). ``inheritFromIAMRole`` means the pod's own identity: the verifier's, the boto3 way.

What CloudNativePG itself says about the backups is kept (:meth:`CnpgBarman.about`) and judged by the checks: the
newest finished ``Backup`` object that failed (restore_succeeded: an older one was restored), a ``ContinuousArchiving``
condition that is False (rpo), a volume-snapshot backup (lives in the cluster's storage; said, with the object-store
backup verified instead). Without a time target the newest completed object-store Backup is the one restored.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from restore import kubeapi
from restore.backups.barman import BarmanCloud
from restore.backups.physical import RecoveryTarget
from restore.errors import ConfigError, DumpNotFound, VerifierFault
from restore.untrusted import visible

GROUP = "postgresql.cnpg.io"
PLUGIN_GROUP = "barmancloud.cnpg.io"
VERSION = "v1"
PLUGIN_NAMES = ("barman-cloud.cloudnative-pg.io",)
# s3Credentials' fields, and the variables boto3 (so Barman Cloud) reads them from.
S3_KEYS = (("accessKeyId", "AWS_ACCESS_KEY_ID"), ("secretAccessKey", "AWS_SECRET_ACCESS_KEY"),
           ("sessionToken", "AWS_SESSION_TOKEN"), ("region", "AWS_DEFAULT_REGION"))
OBJECT_STORE_METHODS = ("barmanObjectStore", "plugin")
# Phases a Backup is judged in: completed, or one that says the backup will not be (lowercased).
FINISHED = ("completed", "failed", "walarchivingfailing", "definitioninvalid")


@dataclass(frozen=True)
class Store:
    """Where a Cluster's Barman backups are, as the Cluster (or its ObjectStore) says."""

    destination: str  # destinationPath, as written (Barman joins it with the server name as it is)
    server: str
    endpoint: str | None
    keys: tuple[tuple[str, str, str], ...]  # (variable, Secret, key)
    from_role: bool  # inheritFromIAMRole
    form: str  # in words: which of the two forms, and the ObjectStore's name
    object_store: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"{self.destination}/{self.server}"

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(secret for _, secret, _ in self.keys))

    def credentials_words(self) -> str:
        if self.keys:
            return "from " + ", ".join(f"Secret {s} (keys {', '.join(k for _, n, k in self.keys if n == s)})"
                                       for s in self.secrets)
        return ("the pod's own role (inheritFromIAMRole): the verifier's identity, the boto3 way" if self.from_role
                else "none named: the verifier's own identity, the boto3 way")


def _store(config: dict[str, Any], *, server: str, form: str, where: str,
           object_store: str | None = None) -> Store:
    destination = str(config.get("destinationPath") or "")
    if config.get("azureCredentials") or config.get("googleCredentials") or not destination.startswith("s3://"):
        raise ConfigError(f"{where} keeps its backups in {destination or 'an object store without destinationPath'} "
                          f"({form}): this suite restores Barman Cloud backups from S3 and S3-compatible stores only "
                          "(destinationPath s3://…); Azure Blob Storage and Google Cloud Storage are not read.")
    creds = config.get("s3Credentials") or {}
    keys = tuple((var, str(ref["name"]), str(ref["key"])) for name, var in S3_KEYS
                 if isinstance(ref := creds.get(name), dict) and ref.get("name") and ref.get("key"))
    notes = []
    if config.get("endpointCA"):
        notes.append(f"endpointCA (Secret {config['endpointCA'].get('name')}) is not applied: the verifier trusts "
                     "its own CA bundle (AWS_CA_BUNDLE)")
    for part in ("wal", "data"):
        if encryption := (config.get(part) or {}).get("encryption"):
            notes.append(f"{part} encrypted at rest by S3 ({encryption}): read transparently with the credentials' "
                         "own permissions (aws:kms needs kms:Decrypt)")
    return Store(destination=destination, server=server, endpoint=config.get("endpointURL") or None, keys=keys,
                 from_role=bool(creds.get("inheritFromIAMRole")), form=form, object_store=object_store,
                 notes=tuple(notes))


def store_of(cluster: dict[str, Any], object_store: Callable[[str], dict[str, Any] | None]) -> Store | None:
    """The Cluster's object store (the Barman Cloud plugin's ObjectStore, else ``spec.backup.barmanObjectStore``);
    None when it has none. ``object_store(name)``: the ObjectStore of that name in the Cluster's namespace."""
    meta = cluster.get("metadata") or {}
    name, where = meta.get("name", ""), f"CloudNativePG Cluster {meta.get('namespace')}/{meta.get('name')}"
    spec = cluster.get("spec") or {}
    plugins = [p for p in spec.get("plugins") or [] if p.get("name") in PLUGIN_NAMES and p.get("enabled") is not False]
    plugins.sort(key=lambda p: not p.get("isWALArchiver"))  # the one that archives WAL is the one to restore from
    for plugin in plugins:
        params = plugin.get("parameters") or {}
        store_name = params.get("barmanObjectName")
        if not store_name:
            raise ConfigError(f"{where} enables the Barman Cloud plugin without parameters.barmanObjectName: the "
                              "ObjectStore that says where its backups are is not named.")
        found = object_store(str(store_name))
        if found is None:
            raise ConfigError(f"{where} names ObjectStore {store_name} (barmancloud.cnpg.io) for its backups, and "
                              f"there is none in namespace {meta.get('namespace')} (kubectl get objectstores."
                              "barmancloud.cnpg.io lists them): the plugin cannot back it up either.")
        return _store((found.get("spec") or {}).get("configuration") or {},
                      server=str(params.get("serverName") or name), where=where, object_store=str(store_name),
                      form=f"the Barman Cloud plugin's ObjectStore {store_name}")
    in_tree = (spec.get("backup") or {}).get("barmanObjectStore")
    if in_tree:
        return _store(in_tree, server=str(in_tree.get("serverName") or name), where=where,
                      form="spec.backup.barmanObjectStore")
    return None


def image_major(cluster: dict[str, Any]) -> str | None:
    """The PostgreSQL major of the Cluster's image (``…/postgresql:16.4-…``), from its spec or status."""
    image = (cluster.get("spec") or {}).get("imageName") or (cluster.get("status") or {}).get("image") or ""
    m = re.search(r":(\d+)(?:\.\d+)?(?:[-@]|$)", str(image))
    return m.group(1) if m else None


def app_database(cluster: dict[str, Any]) -> str:
    """The database CloudNativePG created for the application (its bootstrap's ``database``, default ``app``)."""
    bootstrap = (cluster.get("spec") or {}).get("bootstrap") or {}
    for how in ("initdb", "recovery", "pg_basebackup"):
        if (bootstrap.get(how) or {}).get("database"):
            return str(bootstrap[how]["database"])
    return "app"


def _when(backup: dict[str, Any]) -> str:
    status = backup.get("status") or {}
    return str(status.get("stoppedAt") or status.get("startedAt") or
               (backup.get("metadata") or {}).get("creationTimestamp") or "")


def _method(backup: dict[str, Any]) -> str:
    return str((backup.get("status") or {}).get("method") or (backup.get("spec") or {}).get("method")
               or "barmanObjectStore")


def _phase(backup: dict[str, Any]) -> str:
    return str((backup.get("status") or {}).get("phase") or "").lower()


def _brief(backup: dict[str, Any]) -> dict[str, Any]:
    status = backup.get("status") or {}
    return {"name": (backup.get("metadata") or {}).get("name"), "phase": status.get("phase"),
            "method": _method(backup), "backup_id": status.get("backupId"), "started_at": status.get("startedAt"),
            "stopped_at": status.get("stoppedAt"), "error": status.get("error")}


def judge(cluster: dict[str, Any], backups: list[dict[str, Any]], store: Store) -> dict[str, Any]:
    """What CloudNativePG says, and what of it is a finding (``findings``: checklist item → sentences) or a note."""
    meta, status = cluster.get("metadata") or {}, cluster.get("status") or {}
    where = f"{meta.get('namespace')}/{meta.get('name')}"
    mine = sorted((b for b in backups if ((b.get("spec") or {}).get("cluster") or {}).get("name") == meta.get("name")),
                  key=_when)
    finished = [b for b in mine if _phase(b) in FINISHED]
    completed = [b for b in mine if _phase(b) == "completed" and _method(b) in OBJECT_STORE_METHODS]
    findings: dict[str, list[str]] = {"restore_succeeded": [], "rpo": []}
    notes = list(store.notes)
    if finished and _phase(newest := finished[-1]) != "completed":
        b = _brief(newest)
        findings["restore_succeeded"].append(
            f"CloudNativePG's newest Backup {b['name']} of {where} {b['phase']} ({b['error'] or 'no error given'}, "
            f"at {b['stopped_at'] or b['started_at'] or 'an unknown time'}): "
            + (f"the backup verified here is the older {completed[-1]['metadata']['name']}" if completed else
               "no completed object-store Backup is listed") + "; find out why the backup failed (kubectl describe "
            f"backup {b['name']} -n {meta.get('namespace')}) and take a new one")
    elif not mine and status.get("lastFailedBackup") and (
            str(status["lastFailedBackup"]) > str(status.get("lastSuccessfulBackup") or "")):
        findings["restore_succeeded"].append(
            f"CloudNativePG says the last backup of {where} failed at {status['lastFailedBackup']}, after the last "
            f"successful one ({status.get('lastSuccessfulBackup') or 'none'}): find out why and take a new one")
    if finished and _method(finished[-1]) == "volumeSnapshot" and _phase(finished[-1]) == "completed":
        notes.append(f"the newest Backup {finished[-1]['metadata']['name']} is a volume snapshot: it lives in the "
                     "cluster's storage and cannot be restored outside the cluster; "
                     + (f"verified instead the newest object-store Backup {completed[-1]['metadata']['name']}"
                        if completed else "no object-store Backup is listed, so the object store's newest backup "
                        "was verified"))
    archiving = next((c for c in status.get("conditions") or [] if c.get("type") == "ContinuousArchiving"), None)
    if archiving is None:
        notes.append("the Cluster reports no ContinuousArchiving condition")
    elif str(archiving.get("status")) == "False":
        findings["rpo"].append(
            f"CloudNativePG says WAL archiving of {where} is failing ({archiving.get('reason') or 'no reason'}: "
            f"{archiving.get('message') or 'no message'}): WAL written since does not reach {store.url}, so a "
            "restore cannot reach the present and the RPO is not met; fix the archiving (kubectl describe cluster "
            f"{meta.get('name')} -n {meta.get('namespace')}, and the instance's log)")
    return {
        "cluster": where, "form": store.form, "destination": store.destination, "server": store.server,
        "endpoint": store.endpoint, "credentials": store.credentials_words(), "image": (
            (cluster.get("spec") or {}).get("imageName") or status.get("image")), "image_major": image_major(cluster),
        "first_recoverability_point": status.get("firstRecoverabilityPoint"),
        "last_successful_backup": status.get("lastSuccessfulBackup"),
        "last_failed_backup": status.get("lastFailedBackup"),
        "continuous_archiving": None if archiving is None else {
            k: archiving.get(k) for k in ("status", "reason", "message", "lastTransitionTime")},
        "backups": [_brief(b) for b in mine[-10:]],
        "newest_completed": completed[-1]["metadata"]["name"] if completed else None,
        "findings": findings, "notes": notes}


class Api:
    """The few reads CloudNativePG's objects need, their failures in words: a 404 is None (the caller says what is
    missing), a 401/403 or an unreachable API the verifier's fault, a 429 or 5xx retried briefly."""

    def __init__(self) -> None:
        from kubernetes import client

        if (why := kubeapi.load()) is not None:
            raise VerifierFault(f"No Kubernetes API to read the CloudNativePG Cluster from: {why}. Run in a pod "
                                "whose ServiceAccount may read it (python -m restore fleet render writes that Role), "
                                "or set KUBECONFIG.")
        self.custom, self.core = client.CustomObjectsApi(), client.CoreV1Api()

    def _call(self, verb: str, what: str, call: Callable[[], Any]) -> Any:
        for attempt in range(4):
            try:
                return call()
            except Exception as exc:  # kubernetes.client.ApiException carries the HTTP status; urllib3's do not
                status = getattr(exc, "status", None)
                if status == 404:
                    return None
                if (status in (429, 500, 502, 503, 504) or status is None) and attempt < 3:
                    time.sleep(0.5 * 2 ** attempt)
                    continue
                reason = getattr(exc, "reason", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
                if status in (401, 403):
                    raise VerifierFault(
                        f"The verifier may not {verb} {what} ({status} {reason}): its ServiceAccount needs that in "
                        "its Role (python -m restore fleet render writes exactly what a cnpg: run reads). The "
                        "verifier's permissions, not the backup.") from exc
                raise VerifierFault(f"The Kubernetes API could not {verb} {what} ({status or type(exc).__name__}: "
                                    f"{reason[:300]}): the verifier's connection to the cluster, not the backup. "
                                    "Check the kubeconfig's context or the pod's network, then run again.") from exc
        raise AssertionError("unreachable")  # the loop returns or raises

    def get(self, group: str, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self._call(
            "get", f"{plural}.{group} {namespace}/{name}",
            lambda: self.custom.get_namespaced_custom_object(group, VERSION, namespace, plural, name))
        return found

    def list(self, group: str, plural: str, namespace: str, selector: str | None = None) -> list[dict[str, Any]]:
        found = self._call("list", f"{plural}.{group} in namespace {namespace}",
                           lambda: self.custom.list_namespaced_custom_object(
                               group, VERSION, namespace, plural, label_selector=selector or ""))
        return list((found or {}).get("items") or [])

    def secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """The Secret's keys and their (base64) values; None when there is no such Secret."""
        found = self._call("get", f"Secret {namespace}/{name}",
                           lambda: self.core.read_namespaced_secret(name, namespace))
        return None if found is None else dict(found.data or {})


def credentials(api: Api, namespace: str, store: Store, where: str) -> dict[str, str]:
    """The values the Store's Secrets hold, by variable (never said: the Secret and key are)."""
    values: dict[str, str] = {}
    for variable, secret, key in store.keys:
        data = api.secret(namespace, secret)
        if data is None:
            raise VerifierFault(f"{where} takes its S3 credentials from Secret {secret}, and namespace {namespace} has "
                                f"no such Secret: nothing can read the backups with it (CloudNativePG cannot archive "
                                "with it either). Create the Secret, or correct s3Credentials in the Cluster or its "
                                "ObjectStore; nothing about the backups themselves is known.")
        if key not in data:
            raise VerifierFault(f"{where} takes {variable} from key {key!r} of Secret {secret}, which has no such key "
                                f"(it has: {', '.join(sorted(data)) or 'no keys'}). Correct the key in s3Credentials "
                                "or the Secret; nothing about the backups themselves is known.")
        try:
            values[variable] = base64.b64decode(data[key], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise VerifierFault(f"Key {key!r} of Secret {secret} ({variable} for {where}) is not valid base64 "
                                "text.") from exc
    return values


@dataclass(frozen=True)
class CnpgBarman(BarmanCloud):
    """A CloudNativePG cluster's Barman Cloud backups, with what the cluster says about them."""

    cluster: str = ""  # NAMESPACE/NAME
    facts: dict[str, Any] = field(default_factory=dict, compare=False)
    object_ids: dict[str, str] = field(default_factory=dict, compare=False)  # backupId → Backup object's name

    @property
    def label(self) -> str:
        return f"CloudNativePG cluster {self.cluster} ({self.url})"

    def major(self) -> str:
        """The backup's own major (Barman lists it), which the server must be; the Cluster's image's where Barman
        does not say. A cluster upgraded since the backup runs another major: said in the notes."""
        if not self.chosen.get("version"):
            return str(self.facts.get("image_major") or super().major())
        listed = super().major()
        image = self.facts.get("image_major")
        if image and image != listed:
            note = (f"the Cluster runs PostgreSQL {image} (its image) and the backup restored was taken from "
                    f"PostgreSQL {listed}: it is recovered into a {listed} server, as it must be")
            if note not in self.facts["notes"]:
                self.facts["notes"].append(note)
        return listed

    @property
    def fix(self) -> str:
        return (f"the credentials are the Cluster's ({self.facts['credentials']}; {self.facts['form']}) and the "
                f"endpoint its endpointURL ({self.endpoint or 'AWS'}): check they are the ones CloudNativePG "
                "archives with, and that the store can be reached from the verifier")

    def verify(self) -> list[str]:
        said = [f"cnpg: Cluster {self.cluster}: backups in {self.url} ({self.facts['form']}), credentials "
                f"{self.facts['credentials']}"]
        said += [f"cnpg: {item}: {words}" for item, found in self.facts["findings"].items() for words in found]
        said += [f"cnpg: note: {words}" for words in self.facts["notes"]]
        lines = super().verify()
        used = self.object_ids.get(str(self.chosen.get("backup_id")))
        # The operator's words (a Backup's error, a condition's message) are the API's free text: shown, not obeyed.
        return [visible(line) for line in (*said, *lines, f"cnpg: the backup restored is {self._named(used)}")]

    def _named(self, used: str | None) -> str:
        backup_id = self.chosen.get("backup_id")
        return (f"Backup {used} (backupId {backup_id})" if used else
                f"backupId {backup_id}, which no Backup object of the cluster names (taken outside CloudNativePG, "
                "or its object was deleted)")

    def about(self) -> dict[str, Any] | None:
        used = self.object_ids.get(str(self.chosen.get("backup_id")))
        return self.facts | {"backup_object": used, "backup_id": self.chosen.get("backup_id"),
                             "restored": self._named(used)}


def read(namespace: str, name: str, target: RecoveryTarget, api: Api | None = None) -> CnpgBarman:
    """The Cluster's backups as a Barman Cloud source, its Secrets' values in hand and its own word kept."""
    api = api or Api()
    where = f"CloudNativePG Cluster {namespace}/{name}"
    cluster = api.get(GROUP, "clusters", namespace, name)
    if cluster is None:
        raise ConfigError(f"There is no {where} (checked with get clusters.postgresql.cnpg.io): kubectl get "
                          f"clusters.postgresql.cnpg.io -n {namespace} lists them; check the name, and that the "
                          "kubeconfig's context is the right Kubernetes cluster.")
    store = store_of(cluster, lambda store_name: api.get(PLUGIN_GROUP, "objectstores", namespace, store_name))
    if store is None:
        raise DumpNotFound(f"{where} has no object-store backup: neither spec.backup.barmanObjectStore nor the Barman "
                           "Cloud plugin (spec.plugins) is configured, so no backup of it exists outside the cluster "
                           "to restore (volume snapshots stay in the cluster's storage). Configure one of them and a "
                           "ScheduledBackup; nothing was restored.")
    values = credentials(api, namespace, store, where)
    backups = api.list(GROUP, "backups", namespace)
    facts = judge(cluster, backups, store) | {"database": app_database(cluster)}
    ids = {str(b["status"]["backupId"]): str(b["metadata"]["name"]) for b in sorted(backups, key=_when)
           if ((b.get("spec") or {}).get("cluster") or {}).get("name") == name
           and (b.get("status") or {}).get("backupId")}
    newest = facts["newest_completed"]
    # To the end of the WAL: from the newest completed Backup (a time, a name or a position picks its own).
    pin = next((i for i, n in ids.items() if n == newest), None) if target.latest else None
    return CnpgBarman(url=store.url, endpoint=store.endpoint, target=target, credentials=values, pin=pin,
                      cluster=f"{namespace}/{name}", facts=facts, object_ids=ids)


@dataclass(frozen=True)
class Discovered:
    """One Cluster of a namespace: its object store, or why it has none to verify."""

    namespace: str
    name: str
    store: Store | None
    skipped: str | None = None


def discover(namespace: str, selector: str | None = None, api: Api | None = None) -> list[Discovered]:
    """Every Cluster of the namespace (matching the label selector), by name."""
    api = api or Api()
    found = []
    for cluster in sorted(api.list(GROUP, "clusters", namespace, selector),
                          key=lambda c: str((c.get("metadata") or {}).get("name"))):
        name = str(cluster["metadata"]["name"])
        try:
            store = store_of(cluster, lambda s: api.get(PLUGIN_GROUP, "objectstores", namespace, s))
        except ConfigError as exc:
            found.append(Discovered(namespace, name, None, str(exc)))
            continue
        found.append(Discovered(namespace, name, store, None if store else (
            "no object-store backup (neither spec.backup.barmanObjectStore nor the Barman Cloud plugin)")))
    return found

