"""Hostile or broken requests get a 4xx in the OpenAI shape, never a 500."""

from __future__ import annotations

from tests.e2e.conftest import Gateway


async def post(gateway: Gateway, raw_key: str, path: str, body: bytes, **headers: str) -> int:
    url = f"{gateway.base_url()}/{path}"
    headers = {"Authorization": f"Bearer {raw_key}", "Content-Type": "application/json", **headers}
    async with gateway.keymgmt.session.post(url, data=body, headers=headers) as response:
        payload = await response.json()
        assert set(payload["error"]) == {"message", "type", "param", "code"}
        return response.status


async def test_a_body_its_content_encoding_cannot_undo_is_a_400(gateway: Gateway) -> None:
    raw, _ = await gateway.create_key()
    status = await post(
        gateway, raw, "chat/completions", b"not gzip at all", **{"Content-Encoding": "gzip"}
    )
    assert status == 400
