"""A labelled corpus for the built-in detectors: values each entity must find, and near misses
it must not, each set in prose, in JSON and in code."""

from __future__ import annotations

import base64
import random
import string

import orjson

_random = random.Random(15)
BASE62 = string.ascii_letters + string.digits
BASE64URL = BASE62 + "-_"


def _token(size: int, alphabet: str = BASE62) -> str:
    return "".join(_random.choice(alphabet) for _ in range(size))


def _b64url(value: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(value)).rstrip(b"=").decode()


def _jwt(header: dict[str, object], payload: dict[str, object], signed: bool = True) -> str:
    signature = _token(43, BASE64URL) if signed else ""
    return f"{_b64url(header)}.{_b64url(payload)}.{signature}"


def _pem(label: str, lines: int = 6) -> str:
    body = "\n".join(_token(64, BASE62 + "+/") for _ in range(lines))
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----"


def _aws_key_id(prefix: str = "AKIA") -> str:
    return prefix + _token(16, string.ascii_uppercase + "234567")


def _aws_secret() -> str:
    return _token(40, BASE62 + "/+")


# Where each value is put: prose, a JSON document pasted as text, a line of code.
CONTEXTS = (
    "Please reach me at {} tomorrow, thanks.",
    '{{"id": 42, "value": "{}", "active": true}}',
    'config.set("value", "{}")  # from the ticket',
)
# AWS secrets are told apart by the words near them.
AWS_CONTEXTS = (
    "Our AWS secret access key is {} so rotate it today.",
    '{{"AccessKeyId": "AKIAIOSFODNN7EXAMPLE", "SecretAccessKey": "{}"}}',
    'aws_secret_access_key = "{}"  # prod',
)

POSITIVES: dict[str, list[str]] = {
    "email": [
        "john.doe@example.com", "a.b+tag@sub.example.co.uk", "USER_99@mail-server.io",
        "x@y.org", "maria.garcia@empresa.es", "first-last@company.travel",
        "12345@numbers.net", "test.user%dept@example.com",
    ],
    "phone": [
        "(555) 234-5678", "555-234-5678", "555.234.5678", "+1 555 234 5678", "+1-555-234-5678",
        "+44 20 7946 0958", "+49 30 901820", "+4915112345678", "+33 1 23 45 67 89",
        "+81-3-1234-5678", "+61 2 9876 5432", "1-800-555-0199",
    ],
    "credit_debit_number": [
        "4111 1111 1111 1111", "4111-1111-1111-1111", "4111111111111111",
        "5500 0000 0000 0004", "3782 822463 10005", "6011 1111 1111 1117", "3530111333300000",
        "5105105105105100", "4012888888881881", "2223003122003222", "36227206271667",
        "6200000000000005",
    ],
    "ssn": ["123-45-6789", "536-22-1234", "001-01-0001", "772 12 3456", "457-55-5462"],
    "ip_address": [
        "192.168.1.10", "10.0.0.1", "8.8.8.8", "255.255.255.255", "172.16.254.3",
        "2001:db8::ff00:42:8329", "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
        "fe80::1ff:fe23:4567:890a", "::1", "::ffff:192.0.2.128",
    ],
    "international_bank_account_number": [
        "DE89 3704 0044 0532 0130 00", "DE89370400440532013000", "GB82 WEST 1234 5698 7654 32",
        "GB82WEST12345698765432", "FR14 2004 1010 0505 0001 3M02 606", "NL91ABNA0417164300",
        "ES9121000418450200051332", "CH9300762011623852957", "BE68539007547034",
        "IT60X0542811101000000123456",
    ],
    "url": [
        "https://example.com", "http://www.test.org/path/to/page?x=1&y=2",
        "https://sub.domain.co.uk:8443/a#frag", "ftp://files.example.net/pub/file.tar.gz",
        "www.example.com/index.html",
        "https://en.wikipedia.org/wiki/Python_(programming_language)",
        "http://192.168.0.1/admin", "https://localhost:3000/api", "wss://socket.example.io/live",
    ],
    "mac_address": [
        "00:1A:2B:3C:4D:5E", "00-1a-2b-3c-4d-5e", "a4:83:e7:12:34:56", "0011.2233.4455",
        "FF:FF:FF:FF:FF:FF",
    ],
    "aws_access_key": [
        "AKIAIOSFODNN7EXAMPLE", *(_aws_key_id() for _ in range(4)), _aws_key_id("ASIA"),
        _aws_key_id("AROA"),
    ],
    "aws_secret_key": [
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", *(_aws_secret() for _ in range(6)),
    ],
    "api_key": [
        "sk-proj-" + _token(156, BASE64URL), "sk-svcacct-" + _token(120, BASE64URL),
        "sk-" + _token(48), "sk-" + _token(20) + "T3BlbkFJ" + _token(20),
        "sk-ant-api03-" + _token(93, BASE64URL) + "AA", "sk-ant-admin01-" + _token(93) + "AA",
        "ghp_" + _token(36), "gho_" + _token(36), "ghs_" + _token(36),
        "github_pat_" + _token(22) + "_" + _token(59),
        "xoxb-123456789012-1234567890123-" + _token(24),
        "xoxp-123456789012-123456789012-123456789012-" + _token(32, "0123456789abcdef"),
        "sk_live_" + _token(24), "sk_live_" + _token(99), "rk_live_" + _token(24),
        "sk_test_" + _token(24), "AIza" + _token(35, BASE64URL),
    ],
    "private_key": [
        _pem("RSA PRIVATE KEY"), _pem("PRIVATE KEY"), _pem("EC PRIVATE KEY", 3),
        _pem("OPENSSH PRIVATE KEY"), _pem("ENCRYPTED PRIVATE KEY"),
    ],
    "jwt": [
        _jwt({"alg": "HS256", "typ": "JWT"}, {"sub": "1234567890", "name": "John Doe"}),
        _jwt({"alg": "RS256", "kid": "abc"}, {"iss": "https://auth.example.com", "exp": 1}),
        _jwt({"typ": "JWT", "alg": "ES384"}, {"scope": ["read", "write"]}),
        _jwt({"alg": "none"}, {"sub": "anonymous"}, signed=False),
    ],
}  # fmt: skip

NEGATIVES: dict[str, list[str]] = {
    "email": [
        "user@localhost", "@handle", "john.doe@", "first..last@example.com", "name@domain",
        "foo@bar.123", "john dot doe at example dot com", ".john@example.com",
        "user@-example.com",
    ],
    "phone": [
        "123-456-7890", "2024-01-15", "555-1234", "v1.2.3", "Call 911", "ISBN 978-3-16-148410-0",
        "$1,234,567.89", "5552345678", "+12", "(055) 234-5678", "1700000000",
    ],
    "credit_debit_number": [
        "4111 1111 1111 1112", "1234 5678 9012 3456", "4111 1111-1111 1111", "4111 1111 111",
        "0000 0000 0000 0000", "order 98765432109876", "411111111111111111111",
        "4111 11111 1111 111",
    ],
    "ssn": [
        "000-12-3456", "666-12-3456", "900-12-3456", "123-00-4567", "123-45-0000",
        "078-05-1120", "123-45-67890", "123-456-789", "12-345-6789", "123-45 6789", "123456789",
    ],
    "ip_address": [
        "256.1.1.1", "192.168.1", "1.2.3.4.5", "192.168.01.1", "999.999.999.999", "12:30:45",
        "std::vector", "Foo::Bar", "2001:db8:::1", "1.2.3", "de:ad:be:ef", "a:b:c",
    ],
    "international_bank_account_number": [
        "DE89 3704 0044 0532 0130 01", "GB82WEST12345698765433", "XX89370400440532013000",
        "DE8937040044053201300", "DE89 3704", "NL91ABNA041716430", "de89370400440532013000",
    ],
    "url": [
        "http://", "https:/example.com", "example.com", "www.", "htp://example.com",
        "https://.com", "file.txt", "http://localhostfoo", "https://example",
        "http://-invalid-.com",
    ],
    "mac_address": [
        "00:1A:2B:3C:4D", "00:1A:2B:3C:4D:5E:6F", "00:1A-2B:3C:4D:5E", "00:1G:2B:3C:4D:5E",
        "0011.2233", "12:30:45",
    ],
    "aws_access_key": [
        "AKIA1234567890123456", "AKIAIOSFODNN7EXAMPL", "AKIAIOSFODNN7EXAMPLEX",
        "akiaiosfodnn7example", "AKIB IOSFODNN7EXAMPLE", "XAKIAIOSFODNN7EXAMPLE",
    ],
    "aws_secret_key": [
        "the AWS secret is " + _aws_secret()[:39], "the AWS secret is " + _token(41, BASE62),
        "AWS commit 3f786850e387550fdab836ed7e6dc881de23001b",
        "AWS secret " + _token(40) + "==", "AWS secret ABCDEFGHIJABCDEFGHIJABCDEFGHIJABCDEFGHIJ",
        "build " + _aws_secret() + " passed",  # the right shape, no AWS anywhere near
    ],
    "api_key": [
        "sk-1234", "sk-proj-documentation-and-readme-for-the-new-api-client",
        "sk-" + "x" * 48, "ghp_abc", "ghp_" + _token(35), "xoxo-hugs-and-kisses-everyone",
        "pk_live_" + _token(24), "sk_live_short", "AIza" + _token(34),
        "task-management-system-v2-final-release-notes", "github_pat_short",
        "ghp_abcdefghijklmnopqrstuvwxyzabcdefghij",
    ],
    "private_key": [
        _pem("PUBLIC KEY"), _pem("CERTIFICATE"), "BEGIN RSA PRIVATE KEY",
        "-----BEGIN RSA PRIVATE KEY-----", "the private key file is id_rsa",
    ],
    "jwt": [
        "eyJhbGciOiJIUzI1NiJ9", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0",
        "eyxxxxxxxxxxxx.abc.def", _b64url({"typ": "JWT"}) + "." + _b64url({"a": 1}) + ".sig123",
        "ey1234567890.ab.cd", _jwt({"alg": "HS256"}, {"sub": "x"}, signed=False),
        _b64url({"alg": "HS256"}) + ".bm90IGpzb24." + _token(20),
    ],
}  # fmt: skip

# Text with nothing to find: what most prompts are.
CLEAN = [
    "The meeting moved to 3:30pm on 2024-06-12; bring the Q2 numbers (revenue up 12.5%).",
    'def handler(event):\n    return {"statusCode": 200, "body": json.dumps({"ok": True})}',
    '{"model": "gpt-4o", "temperature": 0.7, "max_tokens": 512, "seed": 1234567890}',
    "Version 2.14.1 fixes #4821; see commit 9fceb02d0ae598e95dc970b74767f19372d61af8.",
    "UUID 123e4567-e89b-12d3-a456-426614174000 and build 20240612.3 passed in 12:04:33.",
    "std::vector<int> v; auto it = v.begin(); // C++ iterators over 0..n",
    "The image is data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4",
    "Order #784512 shipped 3 items for $1,299.00 to Springfield, IL 62704.",
]
