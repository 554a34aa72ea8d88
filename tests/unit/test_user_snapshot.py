"""Which user a call belongs to: the user snapshot's index, and the body's user field."""

from __future__ import annotations

import dataclasses

from proxy.users import UserSnapshot, named_user
from shared.models import User


def user(record_id: str, user_id: str = "alice", **fields: object) -> User:
    made = User(record_id=record_id, user_id=user_id, created_at=0, updated_at=0)
    return dataclasses.replace(made, **fields)  # type: ignore[arg-type]


def test_a_user_is_found_by_key_id_or_by_a_shared_tag() -> None:
    snapshot = UserSnapshot()
    by_key, by_tag = user("1", key_ids=("k1",)), user("2", "bob", tags=("team",))
    snapshot.replace([by_key, by_tag])
    assert snapshot.find("alice", "k1", ()) is by_key
    assert snapshot.find("alice", "k2", ("team",)) is None  # bob's tag, not alice's
    assert snapshot.find("bob", "k2", ("other", "team")) is by_tag
    assert snapshot.find("bob", "k1", ()) is None


def test_changes_move_the_index_and_deletions_leave_it() -> None:
    snapshot = UserSnapshot()
    first = user("1", key_ids=("k1",))
    snapshot.replace([first])
    moved = dataclasses.replace(first, key_ids=("k2",), updated_at=1)
    snapshot.apply([moved])
    assert snapshot.find("alice", "k1", ()) is None
    assert snapshot.find("alice", "k2", ()) is moved
    snapshot.apply([dataclasses.replace(moved, deleted=True)])
    assert snapshot.find("alice", "k2", ()) is None
    assert len(snapshot) == 0 and snapshot._index == {}


def test_of_two_users_matching_one_call_the_oldest_wins_until_it_goes() -> None:
    snapshot = UserSnapshot()
    older = user("b", key_ids=("k",), created_at=1)
    newer = user("a", key_ids=("k",), created_at=2)
    snapshot.replace([newer, older])
    assert snapshot.find("alice", "k", ()) is older
    snapshot.apply([dataclasses.replace(older, deleted=True)])
    assert snapshot.find("alice", "k", ()) is newer


def test_the_body_names_its_user_as_openai_or_anthropic_do() -> None:
    assert named_user({"user": "heidi", "metadata": {"user_id": "x"}}) == "heidi"
    assert named_user({"metadata": {"user_id": "grace"}}) == "grace"
    assert named_user({"user": 5, "metadata": "x"}) == ""
    assert named_user(None) == ""
