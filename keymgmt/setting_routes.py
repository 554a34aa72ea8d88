"""Handlers of the provider-settings API."""

from __future__ import annotations

import uuid

from aiohttp import web

from keymgmt.errors import InvalidInput, SettingNotFound
from keymgmt.routes import load_body
from keymgmt.typedefs import SETTING_STORE
from shared.jsonutil import json_response
from shared.setting_schemas import CreateSettingSchema, SettingSchema, UpdateSettingSchema

SETTINGS_PATH = "/api/provider-settings"
MAX_IDS = 100  # a URL of more would pass the 8 KB a request line may have

create_schema = CreateSettingSchema()
update_schema = UpdateSettingSchema()
setting_schema = SettingSchema()

routes = web.RouteTableDef()


def setting_id_of(request: web.Request) -> str:
    raw = request.match_info["setting_id"]
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise SettingNotFound(f"no provider setting with id {raw!r}") from None


@routes.put(SETTINGS_PATH)
async def create_setting(request: web.Request) -> web.Response:
    fields = await load_body(request, create_schema)
    setting = await request.app[SETTING_STORE].create(fields)
    return json_response(setting_schema.dump(setting))


@routes.get(SETTINGS_PATH)
async def find_settings(request: web.Request) -> web.Response:
    """`ids` (repeatable) selects; without it, every setting."""
    raw_ids = request.query.getall("ids", None)
    setting_ids = None
    if raw_ids is not None:
        if len(raw_ids) > MAX_IDS:
            raise InvalidInput(f"at most {MAX_IDS} ids per query")
        try:
            setting_ids = [str(uuid.UUID(raw)) for raw in raw_ids]
        except ValueError:
            raise InvalidInput("ids must be UUIDs") from None
    found = await request.app[SETTING_STORE].find(setting_ids)
    return json_response(setting_schema.dump(found, many=True))


@routes.get(SETTINGS_PATH + "/{setting_id}")
async def get_setting(request: web.Request) -> web.Response:
    setting = await request.app[SETTING_STORE].get(setting_id_of(request))
    return json_response(setting_schema.dump(setting))


@routes.patch(SETTINGS_PATH + "/{setting_id}")
async def update_setting(request: web.Request) -> web.Response:
    setting_id = setting_id_of(request)
    fields = await load_body(request, update_schema)
    setting = await request.app[SETTING_STORE].update(setting_id, fields)
    return json_response(setting_schema.dump(setting))


@routes.delete(SETTINGS_PATH + "/{setting_id}")
async def delete_setting(request: web.Request) -> web.Response:
    await request.app[SETTING_STORE].delete(setting_id_of(request))
    return web.Response(status=204)
