"""What the v2 listing endpoints share: paging fields, the filter-list field and counting."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from marshmallow import RAISE, Schema, fields, validate

from keymgmt.store import KeyStore
from shared.schemas import MAX_TAGS, MAX_TEXT, StrictBoolean, _storable_text

MAX_PAGE = 1000
MAX_IDS = 1000
ORDERS = ("asc", "desc")


def text() -> fields.String:
    """A string Postgres can store, of at most 256 characters."""
    return fields.String(validate=[validate.Length(max=MAX_TEXT), _storable_text])


def text_list(maximum: int = MAX_TAGS) -> fields.List:
    return fields.List(text(), validate=validate.Length(max=maximum))


def order() -> fields.String:
    return fields.String(validate=validate.OneOf(ORDERS))


class PageSchema(Schema):
    class Meta:
        unknown = RAISE

    limit = fields.Integer(strict=True, validate=validate.Range(1, MAX_PAGE), load_default=100)
    offset = fields.Integer(strict=True, validate=validate.Range(0, 2**31 - 1), load_default=0)
    returnCount = StrictBoolean(load_default=False)


def paged(query: sa.Select[Any], page: dict[str, Any]) -> sa.Select[Any]:
    return query.limit(page["limit"]).offset(page["offset"])


async def count_of(store: KeyStore, query: sa.Select[Any]) -> int:
    """How many rows the filtered query has, before any paging."""
    counted = sa.select(sa.func.count()).select_from(query.order_by(None).subquery())
    rows = await store.fetch(counted)
    return int(rows[0][0])
