"""A fast, deterministic fake of the OpenAI REST API (aiohttp), under the `/v1` prefix.

Used as the upstream in end-to-end tests, as the offline demo upstream
(`python -m proxy.fakeupstream --port 9000`) and as the benchmark upstream, so the hot path
does no logging and no tokenizer work.

Token-count rule (defined rather than measured, so that the fake needs no tokenizer and tests
can compute the expected usage by hand):

- a prompt costs the number of whitespace-separated words in every text it carries, plus 3 per
  message (chat `messages`, Responses `input` items, and `instructions`); legacy `prompt` and
  embedding `input` cost their words, or their length for token arrays;
- the reply is `options.stream_chunks` words of "Hello from the fake upstream." (repeated),
  capped by `max_tokens` / `max_completion_tokens` / `max_output_tokens`; one word is one
  streamed chunk and one completion token, so streamed and non-streamed forms of the same
  request carry the same text and the same usage;
- a chat tool call (the body has `tools` and the last message contains "call a tool") has a
  fixed argument string sent in 5 fragments: 5 completion tokens, never capped;
- `user == "cached"` reports half the prompt tokens (rounded down) as cached; reasoning tokens
  are always 0.
"""

from proxy.fakeupstream.app import create_fake_upstream, main
from proxy.fakeupstream.state import (
    FAKE_UPSTREAM,
    REPLY_WORDS,
    FakeOptions,
    FakeUpstream,
    RecordedRequest,
)

__all__ = [
    "FAKE_UPSTREAM",
    "REPLY_WORDS",
    "FakeOptions",
    "FakeUpstream",
    "RecordedRequest",
    "create_fake_upstream",
    "main",
]
