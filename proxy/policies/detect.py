"""The built-in detectors, and the scanner that runs a policy's detectors in one RE2 pass.

Each detector is an RE2 pattern that finds candidates and a validator that keeps the real ones
(a checksum, a range, a structure, a context). The scanner joins every pattern into one
alternation, each alternative a group of its own, so that the text is read once; a hit is
classified by the group that matched. RE2 runs in time linear in the text, whatever the pattern
(custom ones included), and on bytes: offsets are UTF-8 byte offsets.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson
import re2

from shared.models import CUSTOM
from shared.patterns import OPTIONS

# A validator: the end of the accepted hit (the candidate's end, or less when it trims the
# candidate), or -1 to reject it.
Validator = Callable[[bytes, int, int], int]

DIGITS = frozenset(b"0123456789")
ALNUM = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
HEX = frozenset(b"0123456789ABCDEFabcdef")
TOKEN = ALNUM | frozenset(b"_-")
BASE64 = ALNUM | frozenset(b"/+")
# Between the texts of one request when they are scanned together: no detector matches across.
SEPARATOR = b"\n\x00\n"


@dataclass(frozen=True, slots=True)
class Detector:
    entity: str
    pattern: str
    validate: Validator
    # A rejected candidate of a bounded pattern is tried again one byte on (a hit may start
    # inside it); an unbounded one is skipped whole, so that rejections stay linear.
    bounded: bool = True


@dataclass(frozen=True, slots=True)
class Hit:
    entity: str
    start: int
    end: int
    rule: int = -1  # the regexConfig rule's index, for a custom hit


def _clear(text: bytes, start: int, end: int, inside: frozenset[int]) -> bool:
    """Neither the byte before the hit nor the one after it could continue it."""
    return (start == 0 or text[start - 1] not in inside) and (
        end == len(text) or text[end] not in inside
    )


def _followed_by(text: bytes, end: int, separators: bytes, then: frozenset[int]) -> bool:
    """The hit runs on: a separator and then a byte of `then` (as "-1" after a number)."""
    return end + 1 < len(text) and text[end] in separators and text[end + 1] in then


def _random_looking(token: bytes) -> bool:
    """Generated, not typed: varied bytes of at least two of digits, upper and lower case."""
    classes = (
        any(48 <= b <= 57 for b in token)
        + any(65 <= b <= 90 for b in token)
        + any(97 <= b <= 122 for b in token)
    )
    return classes >= 2 and len(set(token)) >= min(10, len(token) // 2)


# --- email -------------------------------------------------------------------------------------

EMAIL = r"[\pL\pN._%+-]+@[\pL\pN-]+(?:\.[\pL\pN-]+)+"  # internationalised too (RFC 6531)


def _email(text: bytes, start: int, end: int) -> int:
    local, _, domain = text[start:end].decode(errors="replace").partition("@")
    if len(local) > 64 or local.startswith(".") or local.endswith(".") or ".." in local:
        return -1
    labels = domain.split(".")
    if len(domain) > 253 or not labels[-1].isalpha() or len(labels[-1]) < 2:
        return -1
    if any(not 0 < len(label) <= 63 or label[0] == "-" or label[-1] == "-" for label in labels):
        return -1
    return end if start == 0 or text[start - 1] != 64 else -1  # "@" before: not an address


# --- phone -------------------------------------------------------------------------------------

# North American numbers need separators (a bare ten-digit run is an id as often as a phone);
# international ones need the leading "+".
NANP = r"(?:\+?1[ .-]?)?(?:\(\d{3}\)[ .-]?|\d{3}[ .-])\d{3}[ .-]\d{4}"
INTERNATIONAL_PHONE = r"\+[1-9]\d{0,2}(?:[ .-]?(?:\(\d{1,4}\)|\d{1,5})){1,6}"


def _phone_edges(text: bytes, start: int, end: int) -> bool:
    before_ok = start == 0 or (text[start - 1] not in DIGITS and text[start - 1] not in b"+-.")
    return (
        before_ok
        and (end == len(text) or text[end] not in DIGITS)
        and not _followed_by(text, end, b".- ", DIGITS)
    )


def _nanp(text: bytes, start: int, end: int) -> int:
    digits = bytes(b for b in text[start:end] if b in DIGITS)
    if len(digits) == 11:
        digits = digits[1:]
    if len(digits) != 10 or digits[0] < 50 or digits[3] < 50:  # area and exchange start 2-9
        return -1
    return end if _phone_edges(text, start, end) else -1


def _international_phone(text: bytes, start: int, end: int) -> int:
    digits = sum(b in DIGITS for b in text[start:end])
    return end if 8 <= digits <= 15 and _phone_edges(text, start, end) else -1


# --- payment card ------------------------------------------------------------------------------

CARD = r"\d(?:[ -]?\d){12,18}"


def _luhn(digits: bytes) -> bool:
    total = 0
    for position, byte in enumerate(reversed(digits)):
        value = byte - 48
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _issuer_length_ok(digits: bytes) -> bool:
    """The number's length is one its issuer gives out (the prefix says who issued it)."""
    size, two, four = len(digits), int(digits[:2]), int(digits[:4])
    if digits[0] == 52:  # 4: Visa
        return size in (13, 16, 19)
    if 51 <= two <= 55 or 2221 <= four <= 2720:  # Mastercard
        return size == 16
    if two in (34, 37):  # American Express
        return size == 15
    if two in (30, 36, 38, 39) or 3528 <= four <= 3589 or two in (62, 65) or four == 6011:
        return 14 <= size <= 19  # Diners Club, JCB, UnionPay, Discover
    if two == 50 or 56 <= two <= 69:  # Maestro, Discover's other ranges
        return size >= 13
    return False


def _card_groups_ok(groups: list[bytes]) -> bool:
    lengths = [len(group) for group in groups]
    if len(lengths) == 1:
        return True
    if lengths in ([4, 6, 5], [4, 6, 4]):  # American Express, Diners Club
        return True
    return all(length == 4 for length in lengths[:-1]) and 1 <= lengths[-1] <= 4


def _card(text: bytes, start: int, end: int) -> int:
    if start and text[start - 1] in DIGITS:
        return -1
    candidate = text[start:end]
    separators = {b for b in candidate if b not in DIGITS}
    if len(separators) > 1:
        return -1
    groups = re.split(rb"[ -]", candidate) if separators else [candidate]
    # The longest run of whole groups that is a card: a number may be followed by another.
    for count in range(len(groups), 0, -1):
        digits = b"".join(groups[:count])
        if len(digits) < 13:
            return -1
        hit_end = start + sum(len(group) + 1 for group in groups[:count]) - 1
        if (
            len(digits) <= 19
            and _issuer_length_ok(digits)
            and _card_groups_ok(groups[:count])
            and _luhn(digits)
            and (hit_end == len(text) or text[hit_end] not in DIGITS)
        ):
            return hit_end
    return -1


# --- US social security number -----------------------------------------------------------------

SSN = r"\d{3}[- ]\d{2}[- ]\d{4}"
VOIDED_SSNS = frozenset({b"078051120", b"219099999"})  # published in advertising, never valid


def _ssn(text: bytes, start: int, end: int) -> int:
    candidate = text[start:end]
    if candidate[3] != candidate[6]:
        return -1
    digits = candidate[:3] + candidate[4:6] + candidate[7:]
    area = int(digits[:3])
    if area == 0 or area == 666 or area >= 900 or digits[3:5] == b"00" or digits[5:] == b"0000":
        return -1
    if digits in VOIDED_SSNS:
        return -1
    if start and (text[start - 1] in DIGITS or text[start - 1] in b"-"):
        return -1
    if (end < len(text) and text[end] in DIGITS) or _followed_by(text, end, b"- ", DIGITS):
        return -1
    return end


# --- IP and MAC addresses ----------------------------------------------------------------------

IPV4 = r"\d{1,3}(?:\.\d{1,3}){3}"
IPV6 = r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:(?:\.\d{1,3}){3})?"
MAC = r"[0-9A-Fa-f]{2}(?:[:-][0-9A-Fa-f]{2}){5}|[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}"


def _ipv4(text: bytes, start: int, end: int) -> int:
    octets = text[start:end].split(b".")
    if any(int(octet) > 255 or (len(octet) > 1 and octet[0] == 48) for octet in octets):
        return -1
    if start and (text[start - 1] in ALNUM or text[start - 1] in b"."):
        return -1
    if (end < len(text) and text[end] in ALNUM) or _followed_by(text, end, b".", DIGITS):
        return -1
    return end


def _ipv6(text: bytes, start: int, end: int) -> int:
    candidate = text[start:end]
    if not _clear(text, start, end, ALNUM | frozenset(b"_:.")):
        return -1
    try:
        ipaddress.IPv6Address(candidate.decode("ascii"))
    except ValueError:
        return -1
    groups = [group for group in re.split(rb"[:.]", candidate) if group]
    return end if len(groups) >= 2 or candidate == b"::1" else -1


def _mac(text: bytes, start: int, end: int) -> int:
    candidate = text[start:end]
    if b"." not in candidate and len({candidate[i] for i in range(2, 17, 3)}) != 1:
        return -1  # one separator throughout
    return end if _clear(text, start, end, HEX | frozenset(b":-.")) else -1


# --- IBAN --------------------------------------------------------------------------------------

IBAN = r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?"
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22,
    "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip


def _iban(text: bytes, start: int, end: int) -> int:
    if start and text[start - 1] in ALNUM:
        return -1
    length = IBAN_LENGTHS.get(text[start : start + 2].decode("ascii"))
    if length is None:
        return -1
    compact = bytearray()
    position = start
    while position < end and len(compact) < length:  # the country's length, spaces aside
        if text[position] != 32:
            compact.append(text[position])
        position += 1
    if len(compact) < length or (position < len(text) and text[position] in ALNUM):
        return -1
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(chr(b), 36)) for b in rearranged)
    return position if int(number) % 97 == 1 else -1


# --- URL ---------------------------------------------------------------------------------------

URL = r"(?i:https?|ftp|wss?)://[^\s<>\"'`\x00]+|(?i:www)\.[^\s<>\"'`\x00]+"
URL_HOST = re.compile(
    rb"(?:[^@/?#]*@)?(\[[0-9A-Fa-f:.]+\]|localhost|(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+"
    rb"[A-Za-z]{2,63}|\d{1,3}(?:\.\d{1,3}){3})(?::\d{1,5})?(?:[/?#]|$)"
)
TRAILING = b".,;:!?'\")]}*"


def _url(text: bytes, start: int, end: int) -> int:
    if start and text[start - 1] in ALNUM:
        return -1
    while end > start and text[end - 1] in TRAILING:
        closing = text[end - 1]
        opening = {41: b"(", 93: b"[", 125: b"{"}.get(closing)
        if opening is not None and text[start:end].count(opening) >= text[start:end].count(
            bytes([closing])
        ):
            break  # a balanced bracket belongs to the URL, as in a Wikipedia link
        end -= 1
    candidate = text[start:end]
    scheme_end = candidate.find(b"://")
    rest = candidate[scheme_end + 3 :] if scheme_end >= 0 else candidate
    return end if URL_HOST.match(rest) else -1


# --- credentials -------------------------------------------------------------------------------

AWS_ACCESS_KEY = r"(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|AROA|APKA|ASCA)[A-Z2-7]{16}"
# An AWS secret is 40 bytes of base64 with nothing to tell it by but its context: a run of
# base64 of exactly that length, near a word that names AWS.
AWS_SECRET_RUN = r"[A-Za-z0-9/+]{40,}"
AWS_CONTEXT = re.compile(rb"(?i:aws|amazon|secret[ _-]?access[ _-]?key)|A[KS]IA[A-Z2-7]{16}")
AWS_CONTEXT_REACH = 200  # bytes before the secret where the context may be


def _aws_access_key(text: bytes, start: int, end: int) -> int:
    return end if _clear(text, start, end, ALNUM) else -1


def _aws_secret_key(text: bytes, start: int, end: int) -> int:
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


def _token(minimum: int = 0) -> Validator:
    def validate(text: bytes, start: int, end: int) -> int:
        token = text[start:end]
        ok = len(token) >= minimum and _random_looking(token) and _clear(text, start, end, TOKEN)
        return end if ok else -1

    return validate


def _openai_key(text: bytes, start: int, end: int) -> int:
    token = text[start:end]
    body = token[3:]
    if body.startswith(b"ant-") or not _clear(text, start, end, TOKEN):
        return -1
    if body.startswith((b"proj-", b"svcacct-", b"admin-")):
        secret = body.partition(b"-")[2]
        return end if len(secret) >= 40 and _random_looking(secret) else -1
    legacy = len(body) == 48 and body.isalnum() and _random_looking(body)
    return end if legacy or OPENAI_MARKER in body else -1


def _slack_token(text: bytes, start: int, end: int) -> int:
    last = text[start:end].rsplit(b"-", 1)[-1]
    return end if len(last) >= 8 and _token(24)(text, start, end) >= 0 else -1


PEM_LABEL = r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"
PRIVATE_KEY = (
    PEM_LABEL
    + r"[A-Za-z0-9+/=\s\\:,.-]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----"
    + "|"
    + PEM_LABEL
    + r"[A-Za-z0-9+/=\s\\]+"  # cut short: the header and what there is of the body
)


def _private_key(text: bytes, start: int, end: int) -> int:
    body = text[start:end].split(b"-----")[2]
    return end if sum(b in BASE64 for b in body) >= 32 else -1


JWT = r"ey[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*"


def _base64url_json(part: bytes) -> object:
    try:
        return orjson.loads(base64.urlsafe_b64decode(part + b"=" * (-len(part) % 4)))
    except (binascii.Error, ValueError):
        return None


def _jwt(text: bytes, start: int, end: int) -> int:
    if not _clear(text, start, end, TOKEN | frozenset(b".")):
        return -1
    header, payload, signature = text[start:end].split(b".")
    decoded = _base64url_json(header)
    if not isinstance(decoded, dict) or not isinstance(decoded.get("alg"), str):
        return -1
    if not signature and decoded["alg"] != "none":
        return -1
    return end if isinstance(_base64url_json(payload), dict) else -1


# Alternatives earlier in this list win where two match at the same place.
BUILT_IN: tuple[Detector, ...] = (
    Detector("private_key", PRIVATE_KEY, _private_key, bounded=False),
    Detector("jwt", JWT, _jwt, bounded=False),
    Detector("api_key", ANTHROPIC_KEY, _token()),
    Detector("api_key", OPENAI_KEY, _openai_key),
    Detector("api_key", GITHUB_TOKEN, _token()),
    Detector("api_key", SLACK_TOKEN, _slack_token),
    Detector("api_key", STRIPE_KEY, _token()),
    Detector("api_key", GOOGLE_KEY, _token()),
    Detector("aws_access_key", AWS_ACCESS_KEY, _aws_access_key),
    Detector("url", URL, _url, bounded=False),
    Detector("email", EMAIL, _email, bounded=False),
    Detector("international_bank_account_number", IBAN, _iban),
    Detector("mac_address", MAC, _mac),
    Detector("ip_address", IPV6, _ipv6),
    Detector("ip_address", IPV4, _ipv4),
    Detector("ssn", SSN, _ssn),
    Detector("credit_debit_number", CARD, _card),
    Detector("phone", NANP, _nanp),
    Detector("phone", INTERNATIONAL_PHONE, _international_phone),
    Detector("aws_secret_key", AWS_SECRET_RUN, _aws_secret_key, bounded=False),
)


def _accept(_text: bytes, _start: int, end: int) -> int:
    return end


def custom_detector(definition: str) -> Detector:
    """A regexConfig rule: what its pattern matches is a hit, unvalidated."""
    return Detector(CUSTOM, definition, _accept, bounded=False)


FIND = re2.Options()  # the pass over the text: no captures, so RE2 runs its DFA alone
FIND.max_mem, FIND.log_errors, FIND.never_capture = OPTIONS.max_mem, False, True


class Scanner:
    """One policy's detectors, compiled into one pattern (once per policy version).

    The pass over the text finds where the next candidate is, by the DFA alone; a set of the
    same alternatives, matched against that candidate only, says which detector found it: the
    first of them to match, as the alternation itself prefers.
    """

    def __init__(self, detectors: Sequence[Detector]) -> None:
        self._detectors = tuple(detectors)
        self._rules: list[int] = []  # the regexConfig rule index of each detector, or -1
        self._alone: list[re2._Regexp] = []
        self._which = re2.Set.FullMatchSet(OPTIONS)
        customs = 0
        for detector in detectors:
            self._alone.append(re2.compile(detector.pattern, OPTIONS))
            self._which.Add(detector.pattern)
            is_custom = detector.entity == CUSTOM
            self._rules.append(customs if is_custom else -1)
            customs += is_custom
        if detectors:
            self._which.Compile()
        alternation = "|".join(f"(?:{detector.pattern})" for detector in detectors)
        self._combined = re2.compile(alternation, FIND) if detectors else None

    def scan(self, text: bytes) -> list[Hit]:
        """Every hit in `text`, in order, none overlapping another."""
        combined = self._combined
        if combined is None:
            return []
        hits: list[Hit] = []
        position, size = 0, len(text)
        while position < size:
            match = combined.search(text, position)
            if match is None:
                break
            start, end = match.span()
            order = self._detector_of(text, start, end)
            detector = self._detectors[order]
            accepted = detector.validate(text, start, end) if end > start else -1
            if accepted < 0:
                # Another detector may take the same place; else move on.
                hit = self._retry(text, start, order + 1)
                if hit is None:
                    position = start + 1 if detector.bounded or end == start else end
                    continue
                hits.append(hit)
                position = hit.end
                continue
            hits.append(Hit(detector.entity, start, accepted, self._rules[order]))
            position = accepted
        return hits

    def _detector_of(self, text: bytes, start: int, end: int) -> int:
        found = self._which.Match(text[start:end])
        if found:
            return min(found)
        # A custom pattern that matched only in its context (as `\B` does): asked in place.
        for order, alone in enumerate(self._alone):
            match = alone.match(text, start)
            if match is not None and match.end() == end:
                return order
        raise LookupError("a match no detector makes")

    def _retry(self, text: bytes, start: int, first: int) -> Hit | None:
        for order in range(first, len(self._detectors)):
            match = self._alone[order].match(text, start)
            if match is None or match.end() == start:
                continue
            detector = self._detectors[order]
            accepted = detector.validate(text, start, match.end())
            if accepted > start:
                return Hit(detector.entity, start, accepted, self._rules[order])
        return None
