"""One test body for every provider adapter, then each adapter's own quirks."""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson
import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.calls import Call, new_call
from proxy.endpoints import Billing
from proxy.errors import ProxyError, model_not_allowed, no_provider_setting
from proxy.metering import Usage
from proxy.paths import upstream_url
from proxy.provider_settings import SettingSnapshot
from proxy.providers import ADAPTERS, ADAPTERS_BY_NAME, Target
from proxy.targets import Targets, require_model_allowed
from proxy.upstream import upstream_headers
from shared.config import Settings
from shared.models import Key, ProviderSetting

SETTINGS = Settings(openai_api_key="sk-gateway", openai_base_url="https://api.openai.com/v1")


def setting(provider: str, **options: str) -> ProviderSetting:
    return ProviderSetting(
        setting_id=f"id-{provider}", provider=provider, name=f"{provider}-1", secret="sk-up-9876",
        options=options,
    )  # fmt: skip


def chat_answer(usage: dict[str, object]) -> bytes:
    return orjson.dumps(
        {
            "object": "chat.completion",
            "model": "m-1",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}}],
            "usage": usage,
        }
    )


def chat_stream(usage: dict[str, object]) -> bytes:
    chunks = [
        {"object": "chat.completion.chunk", "model": "", "choices": [],
         "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]},
        {"object": "chat.completion.chunk", "model": "m-1",
         "choices": [{"index": 0, "delta": {"content": "Hel"}}]},
        {"object": "chat.completion.chunk", "model": "m-1",
         "choices": [{"index": 0, "delta": {"content": "lo"}}]},
        {"object": "chat.completion.chunk", "model": "m-1", "choices": [], "usage": usage},
    ]  # fmt: skip
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


OPENAI_USAGE = {
    "prompt_tokens": 12,
    "completion_tokens": 5,
    "prompt_tokens_details": {"cached_tokens": 4},
}
OPENAI_SHAPED_USAGE = Usage(prompt_tokens=12, completion_tokens=5, cached_tokens=4)


@dataclass(frozen=True)
class Case:
    """What one adapter must make of a chat call through a setting of its own."""

    setting: ProviderSetting
    route: str  # the proxy path the client calls, under the adapter's route pattern
    match_info: dict[str, str]
    upstream: str  # the URL the call must go to
    credential: tuple[str, str]  # the auth header upstream must get
    answer: bytes = chat_answer(OPENAI_USAGE)  # a JSON answer with usage
    stream: bytes = chat_stream(OPENAI_USAGE)  # the same answer as an event stream
    usage: Usage = field(default_factory=lambda: OPENAI_SHAPED_USAGE)
    error_probe: str = "error.message"  # where a rendered error holds its message


ANTHROPIC_USAGE = {
    "input_tokens": 7, "cache_creation_input_tokens": 3, "cache_read_input_tokens": 2,
    "output_tokens": 5,
}  # fmt: skip


def anthropic_event(kind: str, **fields: object) -> bytes:
    return f"event: {kind}\ndata: ".encode() + orjson.dumps({"type": kind, **fields}) + b"\n\n"


ANTHROPIC_STREAM = b"".join(
    [
        anthropic_event("message_start", message={
            "id": "msg_1", "type": "message", "role": "assistant", "model": "m-1", "content": [],
            "usage": {**ANTHROPIC_USAGE, "output_tokens": 1},
        }),
        anthropic_event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
        anthropic_event("ping"),
        *(anthropic_event("content_block_delta", index=0, delta={"type": "text_delta", "text": t})
          for t in ("Hel", "lo")),
        anthropic_event("content_block_stop", index=0),
        anthropic_event("message_delta", delta={"stop_reason": "end_turn"},
                        usage={"output_tokens": 5}),
        anthropic_event("message_stop"),
    ]
)  # fmt: skip

CASES = {
    "anthropic": Case(
        setting("anthropic"),
        "/api/providers/anthropic/v1/messages", {"tail": "messages"},
        "https://api.anthropic.com/v1/messages",
        ("x-api-key", "sk-up-9876"),
        answer=orjson.dumps({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "m-1",
            "content": [{"type": "text", "text": "Hello"}], "usage": ANTHROPIC_USAGE,
        }),
        stream=ANTHROPIC_STREAM,
        usage=Usage(
            prompt_tokens=12, completion_tokens=5, cached_tokens=2, cache_creation_tokens=3
        ),
        error_probe="error.message",
    ),
    "openai": Case(
        setting("openai", baseUrl="https://eu.api.openai.com/v1", organization="org-1"),
        "/api/providers/openai/v1/chat/completions", {"tail": "chat/completions"},
        "https://eu.api.openai.com/v1/chat/completions",
        ("Authorization", "Bearer sk-up-9876"),
    ),
    "azure": Case(
        setting("azure", resourceName="contoso", apiVersion="2024-10-21"),
        "/api/providers/azure/openai/deployments/gpt4o/chat/completions",
        {"tail": "deployments/gpt4o/chat/completions"},
        "https://contoso.openai.azure.com/openai/deployments/gpt4o/chat/completions"
        "?api-version=2024-10-21",
        ("api-key", "sk-up-9876"),
    ),
    "vllm": Case(
        setting("vllm", url="http://gpu-box:8000/"),
        "/api/providers/vllm/v1/chat/completions", {"tail": "chat/completions"},
        "http://gpu-box:8000/v1/chat/completions",
        ("Authorization", "Bearer sk-up-9876"),
    ),
    "deepinfra": Case(
        setting("deepinfra"),
        "/api/providers/deepinfra/v1/chat/completions", {"tail": "chat/completions"},
        "https://api.deepinfra.com/v1/openai/chat/completions",
        ("Authorization", "Bearer sk-up-9876"),
    ),
    "openai_compatible": Case(
        setting("openai_compatible", baseUrl="https://api.groq.com/openai/v1"),
        "/api/custom/providers/openai_compatible-1/v1/chat/completions",
        {"tail": "chat/completions", "setting_name": "openai_compatible-1"},
        "https://api.groq.com/openai/v1/chat/completions",
        ("Authorization", "Bearer sk-up-9876"),
    ),
}  # fmt: skip


def test_every_adapter_has_a_case() -> None:
    assert set(CASES) == {adapter.name for adapter in ADAPTERS}


def key_with(*settings: ProviderSetting, rotation: bool = False) -> Key:
    return Key(
        key_id="k-1", name="", key_hash="h", created_at=0, updated_at=0,
        setting_ids=tuple(s.setting_id for s in settings), rotation_enabled=rotation,
    )  # fmt: skip


def targets_of(*settings: ProviderSetting) -> Targets:
    snapshot = SettingSnapshot()
    snapshot.replace(settings)
    return Targets(SETTINGS, snapshot)


def call_of(case: Case, body: dict[str, object]) -> Call:
    adapter = ADAPTERS_BY_NAME[case.setting.provider]
    target = targets_of(case.setting).of(
        adapter, key_with(case.setting), case.match_info.get("setting_name", "")
    )
    request = make_mocked_request(
        "POST",
        case.route,
        headers=CIMultiDict({"Content-Type": "application/json"}),
        match_info=case.match_info,
    )
    return new_call(request, target, key_with(), orjson.dumps(body), "req-1")


def split(data: bytes, every: int) -> list[bytes]:
    return [data[i : i + every] for i in range(0, len(data), every)]


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> Case:
    return CASES[request.param]


def test_the_call_goes_to_the_settings_upstream_with_its_credential(case: Case) -> None:
    call = call_of(case, {"model": "m-1", "messages": [{"role": "user", "content": "hi"}]})
    url = upstream_url(call.target.base_url, call.upstream_path, call.upstream_query)
    assert str(url) == case.upstream
    assert call.billing is Billing.TOKENS
    client = CIMultiDictProxy(CIMultiDict({"Authorization": "Bearer gw-key", "api-key": "gw-key"}))
    sent = upstream_headers(client, call.target, call.request_id)
    name, value = case.credential
    assert sent[name] == value
    assert "gw-key" not in orjson.dumps(sent).decode()  # the gateway key never goes upstream


def test_usage_of_the_json_answer(case: Case) -> None:
    call = call_of(case, {"model": "m-1", "messages": []})
    usage, model = call.target.provider.usage_of_body(case.answer)
    assert (usage, model) == (case.usage, "m-1")


@pytest.mark.parametrize("every", [1, 2, 3, 7, 64, 10_000])
def test_usage_of_the_stream_at_any_split_equals_the_json_answers(case: Case, every: int) -> None:
    call = call_of(case, {"model": "m-1", "messages": [], "stream": True})
    meter = call.target.provider.stream_meter(call)
    relayed = b"".join(meter.feed(piece) for piece in split(case.stream, every)) + meter.flush()
    assert meter.usage == case.usage
    assert b"Hel" in relayed and b"lo" in relayed


@pytest.mark.parametrize(
    "error", [no_provider_setting("x"), model_not_allowed("m", "s")], ids=["403", "403-model"]
)
def test_errors_render_with_their_status_and_message(case: Case, error: ProxyError) -> None:
    rendered = ADAPTERS_BY_NAME[case.setting.provider].error_response(error, "req-1")
    assert rendered.status == error.status
    assert isinstance(rendered.body, bytes)
    found: object = orjson.loads(rendered.body)
    for part in case.error_probe.split("."):
        assert isinstance(found, dict)
        found = found[part]
    assert found == error.message


# --- resolving the target -----------------------------------------------------------------------


def test_a_key_without_settings_uses_the_gateways_credential_on_openai_only() -> None:
    targets = targets_of()
    assert targets.of(ADAPTERS_BY_NAME["openai"], key_with()) is targets.default
    for adapter in ADAPTERS:
        if adapter.needs_setting:
            with pytest.raises(ProxyError) as refused:
                targets.of(adapter, key_with(), "any")
            assert refused.value.status == 403


def test_a_key_with_settings_gets_403_for_a_provider_it_has_none_for() -> None:
    azure = CASES["azure"].setting
    targets = targets_of(azure)
    with pytest.raises(ProxyError) as refused:
        targets.of(ADAPTERS_BY_NAME["openai"], key_with(azure))
    assert (refused.value.status, refused.value.code) == (403, "no_provider_setting")


def test_the_compatible_path_names_one_of_the_keys_own_settings() -> None:
    mine = CASES["openai_compatible"].setting
    theirs = ProviderSetting(
        "id-x", "openai_compatible", "theirs", options={"baseUrl": "http://x/v1"}
    )
    targets = targets_of(mine, theirs)
    adapter = ADAPTERS_BY_NAME["openai_compatible"]
    assert targets.of(adapter, key_with(mine), mine.name).setting is mine
    for name in ("theirs", "missing"):
        with pytest.raises(ProxyError):
            targets.of(adapter, key_with(mine), name)


def test_rotation_spreads_calls_over_the_keys_settings_of_the_provider() -> None:
    openai = [ProviderSetting(f"id-{n}", "openai", f"o-{n}", secret=f"sk-{n}") for n in range(3)]
    targets = targets_of(*openai, CASES["azure"].setting)
    adapter = ADAPTERS_BY_NAME["openai"]
    rotating = key_with(*openai, CASES["azure"].setting, rotation=True)
    used = {targets.of(adapter, rotating).setting_id for _ in range(200)}
    assert used == {"id-0", "id-1", "id-2"}
    fixed = key_with(*openai)
    assert {targets.of(adapter, fixed).setting_id for _ in range(50)} == {"id-0"}


def test_a_target_is_built_once_per_version_of_its_setting() -> None:
    first = CASES["vllm"].setting
    targets = targets_of(first)
    adapter = ADAPTERS_BY_NAME["vllm"]
    built = targets.of(adapter, key_with(first))
    assert targets.of(adapter, key_with(first)) is built
    changed = ProviderSetting(first.setting_id, "vllm", first.name, options={"url": "http://new"})
    targets._snapshot.apply([changed])
    assert targets.of(adapter, key_with(first)).base_url == "http://new/v1"


def test_allowed_models_of_a_setting() -> None:
    limited = ProviderSetting("id-l", "openai", "l", allowed_models=frozenset({"gpt-4o-mini"}))
    target = targets_of(limited).of(ADAPTERS_BY_NAME["openai"], key_with(limited))
    require_model_allowed(target, "gpt-4o-mini")
    with pytest.raises(ProxyError) as refused:
        require_model_allowed(target, "gpt-4o")
    assert (refused.value.status, refused.value.code) == (403, "model_not_allowed")


# --- each adapter's quirks ----------------------------------------------------------------------


def azure_call(route_tail: str, query: str, body: dict[str, object], **options: str) -> Call:
    azure = setting("azure", **options)
    target: Target = targets_of(azure).of(ADAPTERS_BY_NAME["azure"], key_with(azure))
    request = make_mocked_request(
        "POST",
        f"/api/providers/azure/openai/{route_tail}" + (f"?{query}" if query else ""),
        headers=CIMultiDict({"Content-Type": "application/json"}),
        match_info={"tail": route_tail},
    )
    return new_call(request, target, key_with(), orjson.dumps(body), "req-1")


def test_azure_forwards_the_clients_api_version_over_the_settings() -> None:
    call = azure_call(
        "deployments/d/chat/completions", "api-version=2025-01-01-preview", {"model": "x"},
        endpoint="https://my.example.com", apiVersion="2024-10-21",
    )  # fmt: skip
    url = str(upstream_url(call.target.base_url, call.upstream_path, call.upstream_query))
    assert (
        url
        == "https://my.example.com/openai/deployments/d/chat/completions?api-version=2025-01-01-preview"
    )


def test_azure_v1_paths_get_no_api_version_and_bill_the_endpoint() -> None:
    call = azure_call(
        "v1/chat/completions", "", {"model": "gpt-4o"}, resourceName="r", apiVersion="2024-10-21"
    )
    assert (call.endpoint, call.upstream_path, call.upstream_query) == (
        "chat/completions", "v1/chat/completions", ""
    )  # fmt: skip


def test_azure_bills_the_deployment_when_the_body_names_no_model() -> None:
    call = azure_call(
        "deployments/my-4o/embeddings", "api-version=2024-10-21", {"input": "hi"}, resourceName="r"
    )
    assert call.model == "my-4o"


@pytest.mark.parametrize(
    ("api_version", "asked"),
    [("2024-06-01", False), ("2024-08-01-preview", False), ("2024-09-01-preview", True),
     ("2024-10-21", True)],
)  # fmt: skip
def test_azure_asks_for_stream_usage_only_where_the_api_version_takes_it(
    api_version: str, asked: bool
) -> None:
    body = {"messages": [], "stream": True}
    call = azure_call(
        "deployments/d/chat/completions", f"api-version={api_version}", body, resourceName="r"
    )
    assert call.drop_usage_chunk is asked
    assert (b"stream_options" in call.body) is asked


def test_azure_filter_chunks_are_relayed_and_never_taken_for_usage() -> None:
    call = azure_call(
        "deployments/d/chat/completions",
        "api-version=2024-10-21",
        {"stream": True},
        resourceName="r",
    )
    meter = call.target.provider.stream_meter(call)
    stream = chat_stream(OPENAI_USAGE)
    relayed = meter.feed(stream) + meter.flush()
    assert b"prompt_filter_results" in relayed  # the filter chunk reaches the client
    assert b'"usage"' not in relayed  # the usage chunk it did not ask for does not
    assert meter.usage == OPENAI_SHAPED_USAGE


def test_a_setting_without_the_field_its_provider_needs_is_a_502_not_a_crash() -> None:
    broken = ProviderSetting("id-b", "vllm", "b")  # written around keymgmt's validation
    with pytest.raises(ProxyError) as refused:
        targets_of(broken).of(ADAPTERS_BY_NAME["vllm"], key_with(broken))
    assert refused.value.status == 502


def test_the_setting_repr_never_shows_the_secret() -> None:
    assert "sk-up-9876" not in repr(CASES["openai"].setting)
    assert "sk-up-9876" not in repr(call_of(CASES["openai"], {"model": "m"}).target)


def test_anthropic_errors_have_anthropics_shape() -> None:
    rendered = ADAPTERS_BY_NAME["anthropic"].error_response(no_provider_setting("x"), "req-1")
    assert isinstance(rendered.body, bytes)
    assert orjson.loads(rendered.body)["error"]["type"] == "permission_error"


def test_anthropic_forwards_its_version_and_beta_headers() -> None:
    call = call_of(CASES["anthropic"], {"model": "m-1", "max_tokens": 5, "messages": []})
    client = CIMultiDictProxy(
        CIMultiDict({"anthropic-version": "2023-06-01", "anthropic-beta": "b-1", "x-api-key": "gw"})
    )
    sent = upstream_headers(client, call.target, call.request_id)
    assert (sent["anthropic-version"], sent["anthropic-beta"]) == ("2023-06-01", "b-1")
    assert sent["x-api-key"] == "sk-up-9876"


def test_anthropic_reserves_by_max_tokens_and_the_prompt() -> None:
    body = {
        "model": "claude-3-5-haiku-latest", "max_tokens": 300,
        "system": [{"type": "text", "text": "Be brief. " * 20}],
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "hello " * 50},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "A" * 40_000}},
        ]}],
    }  # fmt: skip
    call = call_of(CASES["anthropic"], body)
    assert call.output_tokens_bound() == 300
    bound = call.prompt_tokens_bound()
    assert 200 + 300 + 1600 <= bound < 40_000  # the image at Claude's most, not by its bytes


def test_anthropic_endpoints_are_billed_or_refused_for_a_cost_limit() -> None:
    anthropic = ADAPTERS_BY_NAME["anthropic"]
    assert anthropic.billing("POST", "messages") is Billing.TOKENS
    assert anthropic.billing("POST", "messages/count_tokens") is Billing.FREE
    assert anthropic.billing("GET", "models") is Billing.FREE
    assert anthropic.billing("POST", "messages/batches") is None  # billed later: not priced here
