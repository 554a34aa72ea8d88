"""The built-in detectors, and the scanner that runs a policy's detectors in one RE2 pass.

Each detector is an RE2 pattern that finds candidates and a validator that keeps the real ones
(a checksum, a range, a structure, a context). The scanner joins every pattern into one
alternation, each alternative a group of its own, so that the text is read once; a hit is
classified by the group that matched. RE2 runs in time linear in the text, whatever the pattern
(custom ones included), and on bytes: offsets are UTF-8 byte offsets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import re2

from proxy.policies.credentials import (
    ANTHROPIC_KEY,
    AWS_ACCESS_KEY,
    AWS_SECRET_RUN,
    GITHUB_TOKEN,
    GOOGLE_KEY,
    JWT,
    OPENAI_KEY,
    PRIVATE_KEY,
    SLACK_TOKEN,
    STRIPE_KEY,
    random_token,
    valid_aws_access_key,
    valid_aws_secret_key,
    valid_jwt,
    valid_openai_key,
    valid_private_key,
    valid_slack_token,
)
from proxy.policies.validators import (
    CARD,
    EMAIL,
    IBAN,
    INTERNATIONAL_PHONE,
    IPV4,
    IPV6,
    MAC,
    NANP,
    SSN,
    URL,
    Validator,
    valid_card,
    valid_email,
    valid_iban,
    valid_international_phone,
    valid_ipv4,
    valid_ipv6,
    valid_mac,
    valid_nanp,
    valid_ssn,
    valid_url,
)
from shared.models import CUSTOM
from shared.patterns import OPTIONS

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


# Alternatives earlier in this list win where two match at the same place.
BUILT_IN: tuple[Detector, ...] = (
    Detector("private_key", PRIVATE_KEY, valid_private_key, bounded=False),
    Detector("jwt", JWT, valid_jwt, bounded=False),
    Detector("api_key", ANTHROPIC_KEY, random_token()),
    Detector("api_key", OPENAI_KEY, valid_openai_key),
    Detector("api_key", GITHUB_TOKEN, random_token()),
    Detector("api_key", SLACK_TOKEN, valid_slack_token),
    Detector("api_key", STRIPE_KEY, random_token()),
    Detector("api_key", GOOGLE_KEY, random_token()),
    Detector("aws_access_key", AWS_ACCESS_KEY, valid_aws_access_key),
    Detector("url", URL, valid_url, bounded=False),
    Detector("email", EMAIL, valid_email, bounded=False),
    Detector("international_bank_account_number", IBAN, valid_iban),
    Detector("mac_address", MAC, valid_mac),
    Detector("ip_address", IPV6, valid_ipv6),
    Detector("ip_address", IPV4, valid_ipv4),
    Detector("ssn", SSN, valid_ssn),
    Detector("credit_debit_number", CARD, valid_card),
    Detector("phone", NANP, valid_nanp),
    Detector("phone", INTERNATIONAL_PHONE, valid_international_phone),
    Detector("aws_secret_key", AWS_SECRET_RUN, valid_aws_secret_key, bounded=False),
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
