"""A fast, deterministic fake of the OpenAI REST API (aiohttp), under the `/v1` prefix, that also
speaks Anthropic's Messages API (`/v1/messages`, proxy/fakeupstream/anthropic.py) and Azure
OpenAI's URL layouts (`/openai/...`, proxy/fakeupstream/azure.py).

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
  are always 0;
- images (generations, edits and variations, JSON or multipart): `gpt-image-*` models report
  usage: the prompt's words plus 100 image tokens an uploaded image in, and gpt-image-1's
  output tokens out (low 272, medium 1,056, high 4,160 for 1024x1024, other sizes in proportion
  to their pixels; `auto` is medium at 1024x1024), times `n`; other models report none;
- transcriptions and translations hear a second of audio per 32,000 bytes of the file: whisper
  models report `{"type": "duration", "seconds": <rounded up>}` (and `duration` in
  `verbose_json`), other models 10 audio tokens a second in and the transcript's 5 words out;
- Anthropic messages: a prompt costs the words of its text (system blocks, text blocks,
  tool_result contents), plus 3 per message and 3 per tool (plus its description's words),
  counted in cache-prefix order (tools, system, messages); the prompt up to the last block
  marked with `cache_control` is cached: the part up to the breakpoint before it is read
  (`cache_read_input_tokens`), the rest of it written (`cache_creation_input_tokens`), and
  `input_tokens` is what follows the last breakpoint, so one breakpoint is all written and a
  second one turns the first part into a read; the reply is counted as for chat, and a tool
  call (`tools` given and the last message contains "call a tool") is the first tool's
  `tool_use` with input {"query": "fake"}, streamed in 5 input_json_delta fragments;
  `message_start` reports the input usage and 1 output token, `message_delta` all of it;
  the last message containing `[fake:429]` is a 429 rate_limit_error, `[fake:529]` a 529
  overloaded_error, `[fake:overloaded-mid-stream]` an `event: error` overloaded_error after 2
  text deltas when streamed (a 529 otherwise);
- streamed chat and messages fail on `[fake:error-after-preamble]` in the last message (or
  `options.stream_fault` set to it): the role chunk (Anthropic: message_start, ping), then an
  error event; chat also on `[fake:cut-after-content]`: the role chunk and 2 content chunks,
  then the connection dropped; `options.fail_next` fails the next calls with its statuses;
- speech with `stream_format: "sse"` ends with `speech.audio.done` reporting the input's words
  and 4 output tokens per audio chunk (4 chunks); otherwise it is binary audio without usage.
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
