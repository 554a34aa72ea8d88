"""How upstream bills each endpoint: one table, read once a call to meter and admit it.

An endpoint is the route-relative path (`chat/completions`); ids in it are matched as `{id}`.
A `POST` to an endpoint outside the table is one the gateway cannot price.
"""

from __future__ import annotations

from enum import Enum


class Billing(Enum):
    TOKENS = "tokens"  # the answer's token usage: chat, completions, embeddings, responses
    IMAGES = "images"  # gpt-image-* by token usage, other models by the image
    TRANSCRIPTION = "transcription"  # audio in: by the second (whisper) or by token usage
    SPEECH = "speech"  # audio out: by the character of input (tts-1) or by token usage
    FREE = "free"  # upstream does not bill the call
    LATER = "later"  # billed after the call ends (batches, fine-tuning): not metered here


METERED = frozenset({Billing.TOKENS, Billing.IMAGES, Billing.TRANSCRIPTION, Billing.SPEECH})

POST_BILLING: dict[str, Billing] = {
    "chat/completions": Billing.TOKENS,
    "completions": Billing.TOKENS,
    "embeddings": Billing.TOKENS,
    "responses": Billing.TOKENS,
    "images/generations": Billing.IMAGES,
    "images/edits": Billing.IMAGES,
    "images/variations": Billing.IMAGES,
    "audio/transcriptions": Billing.TRANSCRIPTION,
    "audio/translations": Billing.TRANSCRIPTION,
    "audio/speech": Billing.SPEECH,
    "moderations": Billing.FREE,
    "files": Billing.FREE,
    "uploads": Billing.FREE,
    "uploads/{id}/parts": Billing.FREE,
    "uploads/{id}/complete": Billing.FREE,
    "uploads/{id}/cancel": Billing.FREE,
    "chat/completions/{id}": Billing.FREE,  # updates a stored completion's metadata
    "responses/{id}/cancel": Billing.FREE,
    "responses/input_tokens": Billing.FREE,
    "batches": Billing.LATER,
    "batches/{id}/cancel": Billing.FREE,
    "fine_tuning/jobs": Billing.LATER,
    "fine_tuning/jobs/{id}/cancel": Billing.FREE,
    "fine_tuning/jobs/{id}/pause": Billing.FREE,
    "fine_tuning/jobs/{id}/resume": Billing.FREE,
}
# Multipart forms are read for these only; any other metered body is read as JSON.
MULTIPART = frozenset(
    {"images/edits", "images/variations", "audio/transcriptions", "audio/translations"}
)
_LITERALS = frozenset(part for path in POST_BILLING for part in path.split("/"))


def _template(endpoint: str) -> str:
    first, _, rest = endpoint.partition("/")
    parts = (part if part in _LITERALS else "{id}" for part in rest.split("/"))
    return first + "/" + "/".join(parts)


def billing_of(method: str, endpoint: str) -> Billing | None:
    """How the call is billed; None for a POST the gateway cannot price."""
    if method != "POST":
        return Billing.FREE  # reads, lists and deletes
    billing = POST_BILLING.get(endpoint)
    if billing is None and "/" in endpoint:
        billing = POST_BILLING.get(_template(endpoint))
    return billing
