"""The built-in detectors against the labelled corpus: recall, precision, and no false positive."""

from __future__ import annotations

from collections import Counter

import pytest

from proxy.policies.detect import BUILT_IN, Hit, Scanner, custom_detector
from shared.models import ENTITIES
from tests.unit.pii_corpus import AWS_CONTEXTS, CLEAN, CONTEXTS, NEGATIVES, POSITIVES

SCANNER = Scanner(BUILT_IN)


def found(text: str) -> list[tuple[str, str]]:
    data = text.encode()
    return [(hit.entity, data[hit.start : hit.end].decode()) for hit in SCANNER.scan(data)]


def contexts(entity: str) -> tuple[str, ...]:
    return AWS_CONTEXTS if entity == "aws_secret_key" else CONTEXTS


def test_the_corpus_covers_every_entity() -> None:
    assert set(POSITIVES) == set(NEGATIVES) == set(ENTITIES)


def test_recall_and_precision_per_entity() -> None:
    hits, misses, false = Counter[str](), Counter[str](), Counter[str]()
    missed: list[str] = []
    for entity, values in POSITIVES.items():
        for value in values:
            for context in contexts(entity):
                text = context.format(value)
                seen = found(text)
                if (entity, value) in seen:
                    hits[entity] += 1
                else:
                    misses[entity] += 1
                    missed.append(f"{entity}: {text!r} -> {seen}")
                for other, what in seen:
                    if (other, what) != (entity, value) and not _allowed_extra(other, what):
                        false[other] += 1
                        missed.append(f"extra {other} {what!r} in {text!r}")
    for values in NEGATIVES.values():
        for value in values:
            for context in CONTEXTS:
                text = context.format(value)
                for other, what in found(text):
                    if not _allowed_extra(other, what):
                        false[other] += 1
                        missed.append(f"false {other} {what!r} in {text!r}")
    print("\nentity                             recall  precision  (positives, false positives)")
    for entity in ENTITIES:
        total = hits[entity] + misses[entity]
        recall = hits[entity] / total
        precision = hits[entity] / ((hits[entity] + false[entity]) or 1)
        print(f"{entity:34} {recall:6.3f} {precision:9.3f}  ({total}, {false[entity]})")
    assert all(hits[e] / (hits[e] + misses[e]) >= 0.99 for e in ENTITIES), "\n".join(missed)
    assert not false, "\n".join(missed)


def _allowed_extra(entity: str, what: str) -> bool:
    """The AWS contexts name a real-shaped key id on purpose."""
    return entity == "aws_access_key" and what == "AKIAIOSFODNN7EXAMPLE"


@pytest.mark.parametrize("text", CLEAN)
def test_clean_text_has_nothing(text: str) -> None:
    assert found(text) == []


def test_hits_in_one_text_come_in_order_and_do_not_overlap() -> None:
    text = "mail a@example.com, call 555-234-5678, pay 4111 1111 1111 1111, ip 10.0.0.1."
    assert [entity for entity, _ in found(text)] == [
        "email", "phone", "credit_debit_number", "ip_address",
    ]  # fmt: skip


def test_a_card_followed_by_more_digits_is_found_in_its_whole_groups() -> None:
    assert found("card 4111 1111 1111 1111 22 end") == [
        ("credit_debit_number", "4111 1111 1111 1111")
    ]


def test_an_iban_followed_by_a_capitalised_word() -> None:
    assert found("DE89 3704 0044 0532 0130 00 IBAN") == [
        ("international_bank_account_number", "DE89 3704 0044 0532 0130 00")
    ]


def test_a_rejected_candidate_leaves_the_place_to_another_detector() -> None:
    # Not a MAC (seven groups) nor an IPv6 address: nothing; a MAC inside a longer text: found.
    assert found("00:1A:2B:3C:4D:5E:6F") == []
    assert found("mac=00:1A:2B:3C:4D:5E;") == [("mac_address", "00:1A:2B:3C:4D:5E")]


def test_non_ascii_text_is_scanned_by_its_utf8_bytes() -> None:
    text = "Grüße an jürgen.müller@example.de — oder mail an jurgen@example.de"
    assert found(text) == [("email", "jürgen.müller@example.de"), ("email", "jurgen@example.de")]


def test_custom_patterns_join_the_same_pass() -> None:
    scanner = Scanner([*BUILT_IN, custom_detector(r"EMP-\d{6}"), custom_detector(r"(pro)ject-x")])
    data = b"EMP-123456 asked a@example.com about project-x"
    assert [(h.entity, h.rule) for h in scanner.scan(data)] == [
        ("custom", 0), ("email", -1), ("custom", 1),
    ]  # fmt: skip


def test_a_scanner_with_no_detector_finds_nothing() -> None:
    assert Scanner([]).scan(b"a@example.com") == []


def test_hit_offsets_are_byte_offsets() -> None:
    data = "é a@example.com".encode()
    (hit,) = SCANNER.scan(data)
    assert hit == Hit("email", 3, 16)


def test_a_custom_pattern_that_needs_its_context_is_still_named() -> None:
    scanner = Scanner([*BUILT_IN, custom_detector(r"\Bcode-\d+")])
    (hit,) = scanner.scan(b"see xcode-42 now")
    assert (hit.entity, hit.start, hit.end) == ("custom", 5, 12)
