"""Every call into AWS behind the library's own errors: what failed, why, what was checked, how to fix it.

botocore raises one exception class per service error code; left alone, a missing snapshot ends a pytest run in
INTERNALERROR with no report. :func:`aws_call` makes each call, logs it in the restore log's readable form (the
action, its parameters with secrets redacted, what came back), retries throttling with backoff, and turns every
failure into a :class:`CloudError` of one of a few kinds a DBA can act on.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from restore.errors import RestoreError

THROTTLE_ATTEMPTS = 5
_SECRET_KEYS = re.compile(r"(?i)pass|secret|token|key")


class CloudError(RestoreError):
    """A cloud API call failed; ``kind`` says how (not_found, access_denied, throttled, quota, invalid_state,
    collision, kms, unreachable, failed)."""

    def __init__(self, message: str, *, kind: str, action: str, resource: str) -> None:
        super().__init__(message)
        self.kind, self.action, self.resource = kind, action, resource
        # A missing snapshot or object is a finding; the suite's identity, quotas, network or keys are its own.
        self.blame = "backup" if kind in ("not_found", "failed", "invalid_state") else "verifier"


def _kind(code: str) -> str:
    if code.startswith("KMS") or "KMSKey" in code:  # KMSKeyNotAccessibleFault, KMSAccessDeniedException …
        return "kms"
    if code in ("Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
                "SlowDown", "RequestThrottled", "PriorRequestNotComplete"):
        return "throttled"
    if "NotFound" in code or code in ("NoSuchKey", "NoSuchBucket", "404", "ResourceNotFoundException"):
        return "not_found"
    if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthFailure",
                "UnrecognizedClientException", "InvalidClientTokenId", "403"):
        return "access_denied"
    if "Quota" in code or "LimitExceeded" in code:
        return "quota"
    if "AlreadyExists" in code or code == "BucketAlreadyOwnedByYou":
        return "collision"
    if code.startswith("Invalid") and "State" in code:
        return "invalid_state"
    return "failed"


def explain(kind: str, action: str, resource: str, detail: str) -> str:
    """The message for a failed call, by kind."""
    return {
        "not_found": f"{resource} does not exist ({detail}); checked with {action}. Check the name given to "
                     "--backup or in targets.toml, and the AWS account and region the suite runs with.",
        "access_denied": f"Access denied: the suite's AWS identity may not call {action} on {resource} ({detail}). "
                         f"Grant {action} on {resource} to the role or user running the suite.",
        "throttled": f"{action} on {resource} was throttled by AWS {THROTTLE_ATTEMPTS} times in a row ({detail}), "
                     "retried with backoff. Run again later, or ask for a higher API rate limit.",
        "quota": f"{action} on {resource} would exceed an AWS quota ({detail}). Remove instances or snapshots that "
                 "are no longer needed (python -m restore cleanup removes this suite's expired ones) or ask AWS "
                 "for a higher quota.",
        "collision": f"{resource} already exists ({detail}); {action} was not repeated over it. Another run may "
                     "own it: python -m restore cleanup --dry-run lists the suite's expired instances.",
        "invalid_state": f"{resource} is not in a state that allows {action} ({detail}). Wait until it is "
                         "available, then run again.",
        "kms": f"{action} on {resource} failed on its KMS key ({detail}): the key does not exist, is disabled, or "
               "the suite's AWS identity may not use it. Allow the role kms:Decrypt, kms:DescribeKey and "
               "kms:CreateGrant on that key (its key policy, or a grant), or set kms_key_id in targets.toml to a key "
               "the role may use.",
        "unreachable": f"AWS could not be called for {action} on {resource} ({detail}). Set credentials and a "
                       "region (AWS_PROFILE, AWS_DEFAULT_REGION, or the instance role), and check the network path.",
    }.get(kind, f"{action} on {resource} failed ({detail}).")


def _shown(params: dict[str, Any]) -> str:
    parts = []
    for key, value in params.items():
        if key == "Tags":
            value = ",".join(f"{t['Key']}={t['Value']}" for t in value)
        parts.append(f"{key}={'***' if _SECRET_KEYS.search(key) and key != 'Tags' else value}")
    return " ".join(parts)


def aws_call(method: Callable[..., Any], action: str, *, resource: str, log: Callable[[str], None] | None = None,
             summarize: Callable[[Any], str] | None = None, **params: Any) -> Any:
    """``method(**params)``, logged, throttling retried, every failure a :class:`CloudError`."""
    from botocore.exceptions import BotoCoreError, ClientError

    for attempt in range(THROTTLE_ATTEMPTS):
        if log:
            log(f"$ {action} {_shown(params)}")
        try:
            result = method(**params)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?"))
            detail = f"{code}: {error.get('Message') or exc}"
            kind = _kind(code)
            if log:
                log(f"  -> {detail}")
            if kind == "throttled" and attempt + 1 < THROTTLE_ATTEMPTS:
                time.sleep(min(8.0, 0.5 * 2 ** attempt))
                continue
            raise CloudError(explain(kind, action, resource, detail), kind=kind, action=action,
                             resource=resource) from exc
        except BotoCoreError as exc:
            if log:
                log(f"  -> {type(exc).__name__}: {exc}")
            raise CloudError(explain("unreachable", action, resource, f"{type(exc).__name__}: {exc}"),
                             kind="unreachable", action=action, resource=resource) from exc
        if log:
            log(f"  -> ok{': ' + summarize(result) if summarize else ''}")
        return result
    raise AssertionError("unreachable")  # the loop returns or raises
