"""The window layout is stated twice, in Python for keymgmt's rebuild and in each Lua script."""

from importlib import resources

import pytest

from shared.limit_keys import WINDOW_BUCKETS


@pytest.mark.parametrize("script", ["admit.lua", "settle.lua", "usage.lua"])
def test_every_script_lays_windows_out_as_python_does(script: str) -> None:
    source = resources.files("shared").joinpath("lua", script).read_text()
    assert f"local BUCKETS = {WINDOW_BUCKETS}\n" in source
