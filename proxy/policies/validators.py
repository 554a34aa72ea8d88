"""The validators of the built-in detectors for personal data, and what they share.

Each validator takes the text, and a candidate's start and end, as the scanner found them; it
keeps the real hits (a checksum, a range, a structure, a context) and drops the rest. Offsets are
UTF-8 byte offsets.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

# A validator: the end of the accepted hit (the candidate's end, or less when it trims the
# candidate), or -1 to reject it.
Validator = Callable[[bytes, int, int], int]

DIGITS = frozenset(b"0123456789")
ALNUM = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
HEX = frozenset(b"0123456789ABCDEFabcdef")
TOKEN = ALNUM | frozenset(b"_-")
BASE64 = ALNUM | frozenset(b"/+")


def stands_apart(text: bytes, start: int, end: int, inside: frozenset[int]) -> bool:
    """Neither the byte before the hit nor the one after it could continue it."""
    return (start == 0 or text[start - 1] not in inside) and (
        end == len(text) or text[end] not in inside
    )


def _followed_by(text: bytes, end: int, separators: bytes, then: frozenset[int]) -> bool:
    """The hit runs on: a separator and then a byte of `then` (as "-1" after a number)."""
    return end + 1 < len(text) and text[end] in separators and text[end + 1] in then


def random_looking(token: bytes) -> bool:
    """Generated, not typed: varied bytes of at least two of digits, upper and lower case."""
    classes = (
        any(48 <= b <= 57 for b in token)
        + any(65 <= b <= 90 for b in token)
        + any(97 <= b <= 122 for b in token)
    )
    return classes >= 2 and len(set(token)) >= min(10, len(token) // 2)


# --- email -------------------------------------------------------------------------------------

EMAIL = r"[\pL\pN._%+-]+@[\pL\pN-]+(?:\.[\pL\pN-]+)+"  # internationalised too (RFC 6531)


def valid_email(text: bytes, start: int, end: int) -> int:
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


def valid_nanp(text: bytes, start: int, end: int) -> int:
    digits = bytes(b for b in text[start:end] if b in DIGITS)
    if len(digits) == 11:
        digits = digits[1:]
    if len(digits) != 10 or digits[0] < 50 or digits[3] < 50:  # area and exchange start 2-9
        return -1
    return end if _phone_edges(text, start, end) else -1


def valid_international_phone(text: bytes, start: int, end: int) -> int:
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


def valid_card(text: bytes, start: int, end: int) -> int:
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


def valid_ssn(text: bytes, start: int, end: int) -> int:
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


def valid_ipv4(text: bytes, start: int, end: int) -> int:
    octets = text[start:end].split(b".")
    if any(int(octet) > 255 or (len(octet) > 1 and octet[0] == 48) for octet in octets):
        return -1
    if start and (text[start - 1] in ALNUM or text[start - 1] in b"."):
        return -1
    if (end < len(text) and text[end] in ALNUM) or _followed_by(text, end, b".", DIGITS):
        return -1
    return end


def valid_ipv6(text: bytes, start: int, end: int) -> int:
    candidate = text[start:end]
    if not stands_apart(text, start, end, ALNUM | frozenset(b"_:.")):
        return -1
    try:
        ipaddress.IPv6Address(candidate.decode("ascii"))
    except ValueError:
        return -1
    groups = [group for group in re.split(rb"[:.]", candidate) if group]
    return end if len(groups) >= 2 or candidate == b"::1" else -1


def valid_mac(text: bytes, start: int, end: int) -> int:
    candidate = text[start:end]
    if b"." not in candidate and len({candidate[i] for i in range(2, 17, 3)}) != 1:
        return -1  # one separator throughout
    return end if stands_apart(text, start, end, HEX | frozenset(b":-.")) else -1


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


def valid_iban(text: bytes, start: int, end: int) -> int:
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


def valid_url(text: bytes, start: int, end: int) -> int:
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
