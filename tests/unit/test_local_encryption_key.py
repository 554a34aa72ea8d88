"""`make run` keeps a SETTINGS_ENCRYPTION_KEY under .local/ when none is set."""

from __future__ import annotations

import stat
from pathlib import Path

from run import ENCRYPTION_KEY_FILE, local_encryption_key

from shared.secrets import KEY_BYTES, parse_key


def test_made_once_private_then_kept(tmp_path: Path) -> None:
    data_dir = tmp_path / ".local"
    key, made = local_encryption_key(data_dir)
    assert made and len(parse_key(key)) == KEY_BYTES
    mode = (data_dir / ENCRYPTION_KEY_FILE).stat().st_mode
    assert stat.S_IMODE(mode) == 0o600
    assert local_encryption_key(data_dir) == (key, False)
    assert local_encryption_key(tmp_path / "other")[0] != key
