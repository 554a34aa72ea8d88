"""Token counting works offline and estimates prompts the way the API counts them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import tiktoken

from shared import tokens


def test_encodings_load_offline_from_the_packaged_files(tmp_path: Path) -> None:
    # A fresh cache directory and no network: tiktoken must find its files where it looks first.
    script = (
        "import socket\n"
        "def refuse(*a, **k): raise OSError('network disabled in this test')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "from shared import tokens\n"
        "print(tokens.count_text('hello world', 'gpt-4o'),"
        " tokens.count_text('hello world', 'gpt-3.5-turbo'))\n"
    )
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", "2"]
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_model_picks_its_encoding() -> None:
    assert tokens.encoding_for("gpt-4o-mini").name == "o200k_base"
    assert tokens.encoding_for("o3-mini").name == "o200k_base"
    assert tokens.encoding_for("gpt-3.5-turbo").name == "cl100k_base"


def test_chat_prompt_estimate_follows_the_cookbook() -> None:
    encoding = tiktoken.get_encoding("o200k_base")
    body = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "name": "ann", "content": [{"type": "text", "text": "What is 2+2?"}]},
        ]
    }
    n = lambda text: len(encoding.encode(text))  # noqa: E731
    expected = (
        3 + (3 + n("system") + n("Be brief.")) + (3 + n("user") + 1 + n("ann") + n("What is 2+2?"))
    )
    assert tokens.count_chat_prompt(body, tokens.tiktoken_counter("gpt-4o")) == expected


def test_tools_and_images_add_to_the_estimate() -> None:
    plain = {"messages": [{"role": "user", "content": "hi"}]}
    with_tools = {
        **plain,
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {}}}],
    }
    with_image = {
        "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
        ]
    }
    count = tokens.tiktoken_counter("gpt-4o")
    base = tokens.count_chat_prompt(plain, count)
    assert tokens.count_chat_prompt(with_tools, count) > base
    assert tokens.count_chat_prompt(with_image, count) >= tokens.IMAGE_TOKENS


def test_inputs_of_completions_and_embeddings() -> None:
    count = tokens.tiktoken_counter("gpt-4o")
    assert tokens.count_input([1, 2, 3], tokens.tiktoken_counter("text-embedding-3-small")) == 3
    assert tokens.count_input(["a b", "c"], count) == count("a b") + count("c")
    assert tokens.count_input(None, count) == 0


TEXTS = [
    "hello world",
    "Grüße aus Köln, ça va ? Ñandú.",
    "日本語のテキストとかな混じり文",
    "Привет, мир! Как дела?",
    "emoji 🙂🚀👩‍👩‍👧 and accents é è ê",
    "    def f(x):\n        return x ** 2  # code, indentation\n",
    "<|endoftext|> spelled out in a prompt",
    "a lone surrogate \ud800 from JSON",
    "",
]


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-3.5-turbo"])
@pytest.mark.parametrize("text", TEXTS)
def test_utf8_bytes_bound_the_tokens(text: str, model: str) -> None:
    assert tokens.utf8_bytes(text) >= tokens.count_text(text, model)


def test_the_bound_covers_the_estimate_of_every_kind_of_prompt() -> None:
    chat = {
        "messages": [
            {"role": "system", "content": TEXTS[1]},
            {"role": "user", "name": "名前", "content": [{"type": "text", "text": TEXTS[2]}]},
            {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
        ],
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {}}}],
    }
    count = tokens.tiktoken_counter("gpt-4o")
    assert tokens.count_chat_prompt(chat, tokens.utf8_bytes) >= tokens.count_chat_prompt(
        chat, count
    )
    for value in (TEXTS, [[1, 2, 3]], [{"content": TEXTS[3]}, TEXTS[4]]):
        assert tokens.count_input(value, tokens.utf8_bytes) >= tokens.count_input(value, count)
