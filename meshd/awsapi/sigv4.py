"""Verifying AWS Signature Version 4 on requests to the App Mesh REST front end.

The signing steps (canonical request, string to sign, the derived key's HMAC chain) are
botocore's `SigV4Auth`, the implementation every AWS CLI and boto3 call here was signed
with: meshd rebuilds the request as the client saw it and asks the same code for the
signature it should carry, so the two cannot disagree on an encoding corner. What a
verifier adds is meshd's own, below: which headers were signed (the client's list, not
botocore's choice), the payload hash meshd computed from the bytes it received, the
credential scope and the clock.

Refusals use the names AWS services answer with, so SDKs raise what their users catch:
- `MissingAuthenticationTokenException` (403): no Authorization header at all;
- `IncompleteSignatureException` (400): a malformed Authorization header, or no X-Amz-Date;
- `UnrecognizedClientException` (403): an access key id meshd did not issue (or deleted);
- `InvalidSignatureException` (403): a wrong signature or payload hash, a stale or future
  date (more than 15 minutes off), a scope for another date, region or service.
"""
from __future__ import annotations

import hashlib
import hmac
import time
from calendar import timegm
from dataclasses import dataclass
from typing import Callable

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW_S = 15 * 60  # AWS's window for X-Amz-Date
_MISMATCH = ("The request signature we calculated does not match the signature you provided. "
             "Check your AWS Secret Access Key and signing method.")


class SignatureError(Exception):
    """A request refused before anything else is looked at."""

    def __init__(self, code: str, status: int, message: str):
        self.code, self.status = code, status
        super().__init__(message)


def _incomplete(message: str) -> SignatureError:
    return SignatureError("IncompleteSignatureException", 400, message)


def _invalid(message: str) -> SignatureError:
    return SignatureError("InvalidSignatureException", 403, message)


@dataclass(frozen=True)
class Authorization:
    """The parts of an `Authorization: AWS4-HMAC-SHA256 ...` header."""

    access_key: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(value: str) -> Authorization:
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise _incomplete(f"unsupported authorization algorithm {algorithm!r}: meshd verifies {ALGORITHM} only")
    parts = {}
    for item in rest.split(","):
        key, eq, val = item.strip().partition("=")
        if not eq:
            raise _incomplete(f"malformed Authorization component {item.strip()!r}")
        parts[key] = val
    missing = [k for k in ("Credential", "SignedHeaders", "Signature") if k not in parts]
    if missing:
        raise _incomplete(f"Authorization header requires {', '.join(missing)}")
    scope = parts["Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        raise _incomplete("Credential must be <access key>/<yyyymmdd>/<region>/<service>/aws4_request")
    signed = tuple(parts["SignedHeaders"].split(";"))
    if "host" not in signed:
        raise _invalid("the Host header must be signed")
    return Authorization(scope[0], scope[1], scope[2], scope[3], signed, parts["Signature"])


class _Expected(SigV4Auth):
    """botocore's signer, told which headers the client signed and the payload's hash."""

    def __init__(self, secret: str, auth: Authorization, region: str, service: str, payload_hash: str):
        super().__init__(Credentials(auth.access_key, secret), service, region)
        self._signed = auth.signed_headers
        self._payload_hash = payload_hash

    def headers_to_sign(self, request):
        out = HTTPHeaders()
        for name in self._signed:
            for value in request.headers.get_all(name) or ():
                out[name] = value
        return out

    def payload(self, request):
        return self._payload_hash


def _amz_time(stamp: str) -> float:
    try:
        return float(timegm(time.strptime(stamp, "%Y%m%dT%H%M%SZ")))
    except ValueError:
        raise _incomplete(f"X-Amz-Date {stamp!r} is not in the form YYYYMMDDTHHMMSSZ") from None


class Verifier:
    """Checks a request's signature; answers the principal whose key signed it.

    `lookup(access_key_id)` gives (principal, secret), or None for a key meshd does not hold;
    `region()` the cluster's region (read per request: it lives in etcd, recorded by the
    cluster's first meshd).
    """

    def __init__(self, lookup: Callable[[str], tuple[str, str] | None], *, region: Callable[[], str],
                 service: str = "appmesh", clock: Callable[[], float] = time.time):
        self.lookup = lookup
        self.region = region
        self.service = service
        self.clock = clock

    def verify(self, method: str, host: str, raw_target: str, headers, body: bytes, *, tls: bool) -> tuple[str, str]:
        """(principal, access key id) of a correctly signed request, or SignatureError.

        `raw_target` is the request target exactly as received (path and query, still
        percent-encoded); `headers` a case-insensitive multidict of the received headers."""
        value = headers.get("Authorization")
        if value is None:
            if "X-Amz-Signature" in raw_target:
                raise _incomplete("presigned (query string) requests are not accepted; sign the Authorization header")
            raise SignatureError("MissingAuthenticationTokenException", 403, "Missing Authentication Token")
        auth = parse_authorization(value)
        stamp = headers.get("X-Amz-Date")
        if stamp is None:
            raise _incomplete("Authorization header requires the X-Amz-Date header")
        signed_at = _amz_time(stamp)
        now = self.clock()
        if abs(now - signed_at) > MAX_SKEW_S:
            raise _invalid(f"Signature expired: {stamp} is now earlier than "
                           f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now - MAX_SKEW_S))} "
                           f"({time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now))} - 15 min.)"
                           if signed_at < now else
                           f"Signature not yet current: {stamp} is still later than "
                           f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now + MAX_SKEW_S))} "
                           f"({time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now))} + 15 min.)")
        if auth.date != stamp[:8]:
            raise _invalid(f"Credential should be scoped to a valid date: {auth.date} is not the date "
                           f"of X-Amz-Date {stamp}")
        region = self.region()
        if auth.region != region:
            raise _invalid(f"Credential should be scoped to a valid region, not {auth.region!r}: "
                           f"this cluster's region is {region!r}")
        if auth.service != self.service:
            raise _invalid(f"Credential should be scoped to correct service: {self.service!r}, not {auth.service!r}")
        for name in auth.signed_headers:
            if name not in headers:
                raise _invalid(f"signed header {name!r} is not in the request")
        if "x-amz-security-token" in headers:
            raise SignatureError("UnrecognizedClientException", 403,
                                 "The security token included in the request is invalid: meshd access keys "
                                 "are long-term keys and carry no session token (unset AWS_SESSION_TOKEN)")
        payload_hash = hashlib.sha256(body).hexdigest()
        claimed = headers.get("X-Amz-Content-SHA256")
        if claimed is not None and claimed != payload_hash:
            raise _invalid("The provided 'x-amz-content-sha256' header does not match what was computed.")
        found = self.lookup(auth.access_key)
        if found is None:
            raise SignatureError("UnrecognizedClientException", 403,
                                 "The security token included in the request is invalid.")
        principal, secret = found
        request = AWSRequest(method=method, url=("https://" if tls else "http://") + host + raw_target,
                             headers=headers)
        request.context["timestamp"] = stamp
        signer = _Expected(secret, auth, region, self.service, payload_hash)
        canonical = signer.canonical_request(request)
        expected = signer.signature(signer.string_to_sign(request, canonical), request)
        # Constant time: how much of a guess matched must not show in the response time.
        if not hmac.compare_digest(expected, auth.signature):
            raise _invalid(_MISMATCH)
        return principal, auth.access_key
