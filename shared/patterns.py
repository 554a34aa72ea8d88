"""RE2 as policies use it: keymgmt checks custom patterns with the options the proxy runs them."""

from __future__ import annotations

import re2

OPTIONS = re2.Options()
OPTIONS.max_mem = 64 << 20  # room for the DFA of a policy with every detector and its own
OPTIONS.log_errors = False  # a refused pattern is the client's error, answered, not logged
MAX_PATTERN = 1000


def pattern_problem(definition: str) -> str | None:
    """Why a custom pattern cannot be a rule (RE2 refuses it, say), or None when it can."""
    if len(definition) > MAX_PATTERN:
        return f"longer than {MAX_PATTERN} characters"
    try:
        pattern = re2.compile(definition, OPTIONS)
    except re2.error as error:
        reason = error.args[0] if error.args else ""
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        return f"not an RE2 pattern: {reason}"
    if pattern.fullmatch(""):
        return "matches the empty string"
    return None
