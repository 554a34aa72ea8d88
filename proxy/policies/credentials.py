"""The patterns and validators of the built-in detectors for credentials: cloud and API keys,
private keys (PEM), and JSON Web Tokens."""

from __future__ import annotations

import base64
import binascii
import re

import orjson

from proxy.policies.validators import ALNUM, BASE64, TOKEN, Validator, random_looking, stands_apart

# --- credentials -------------------------------------------------------------------------------

AWS_ACCESS_KEY = r"(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|AROA|APKA|ASCA)[A-Z2-7]{16}"
# An AWS secret is 40 bytes of base64 with nothing to tell it by but its context: a run of
# base64 of exactly that length, near a word that names AWS.
AWS_SECRET_RUN = r"[A-Za-z0-9/+]{40,}"
AWS_CONTEXT = re.compile(rb"(?i:aws|amazon|secret[ _-]?access[ _-]?key)|A[KS]IA[A-Z2-7]{16}")
AWS_CONTEXT_REACH = 200  # bytes before the secret where the context may be


def valid_aws_access_key(text: bytes, start: int, end: int) -> int:
    return end if stands_apart(text, start, end, ALNUM) else -1


def valid_aws_secret_key(text: bytes, start: int, end: int) -> int:
    if end - start != 40 or (end < len(text) and text[end] == 61):  # "=": padding of base64
        return -1
    secret = text[start:end]
    # Base64 of random bytes: both cases (a hex digest, say, has one).
    if not (any(65 <= b <= 90 for b in secret) and any(97 <= b <= 122 for b in secret)):
        return -1
    window = text[max(0, start - AWS_CONTEXT_REACH) : start]
    return end if AWS_CONTEXT.search(window) else -1


OPENAI_KEY = r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,250}"
ANTHROPIC_KEY = r"sk-ant-(?:api|admin|oat|sid)\d{2}-[A-Za-z0-9_-]{40,200}"
GITHUB_TOKEN = r"gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59}"
SLACK_TOKEN = r"xox[bpoas]-\d+-[A-Za-z0-9-]{10,250}"
STRIPE_KEY = r"[rs]k_(?:live|test)_[A-Za-z0-9]{20,247}"
GOOGLE_KEY = r"AIza[0-9A-Za-z_-]{35}"
OPENAI_MARKER = b"T3BlbkFJ"  # "OpenAI", in base64, in every legacy key


def random_token(minimum: int = 0) -> Validator:
    def validate(text: bytes, start: int, end: int) -> int:
        token = text[start:end]
        ok = (
            len(token) >= minimum
            and random_looking(token)
            and stands_apart(text, start, end, TOKEN)
        )
        return end if ok else -1

    return validate


def valid_openai_key(text: bytes, start: int, end: int) -> int:
    token = text[start:end]
    body = token[3:]
    if body.startswith(b"ant-") or not stands_apart(text, start, end, TOKEN):
        return -1
    if body.startswith((b"proj-", b"svcacct-", b"admin-")):
        secret = body.partition(b"-")[2]
        return end if len(secret) >= 40 and random_looking(secret) else -1
    legacy = len(body) == 48 and body.isalnum() and random_looking(body)
    return end if legacy or OPENAI_MARKER in body else -1


def valid_slack_token(text: bytes, start: int, end: int) -> int:
    last = text[start:end].rsplit(b"-", 1)[-1]
    return end if len(last) >= 8 and random_token(24)(text, start, end) >= 0 else -1


PEM_LABEL = r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"
PRIVATE_KEY = (
    PEM_LABEL
    + r"[A-Za-z0-9+/=\s\\:,.-]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----"
    + "|"
    + PEM_LABEL
    + r"[A-Za-z0-9+/=\s\\]+"  # cut short: the header and what there is of the body
)


def valid_private_key(text: bytes, start: int, end: int) -> int:
    body = text[start:end].split(b"-----")[2]
    return end if sum(b in BASE64 for b in body) >= 32 else -1


JWT = r"ey[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*"


def _base64url_json(part: bytes) -> object:
    try:
        return orjson.loads(base64.urlsafe_b64decode(part + b"=" * (-len(part) % 4)))
    except (binascii.Error, ValueError):
        return None


def valid_jwt(text: bytes, start: int, end: int) -> int:
    if not stands_apart(text, start, end, TOKEN | frozenset(b".")):
        return -1
    header, payload, signature = text[start:end].split(b".")
    decoded = _base64url_json(header)
    if not isinstance(decoded, dict) or not isinstance(decoded.get("alg"), str):
        return -1
    if not signature and decoded["alg"] != "none":
        return -1
    return end if isinstance(_base64url_json(payload), dict) else -1
