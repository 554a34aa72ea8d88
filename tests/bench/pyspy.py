"""Where a server's CPU goes under load: py-spy samples it, and the collapsed stacks are summed
per function, by own time (the frame on top) and by inclusive time (anywhere on the stack)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

RATE = 250  # samples per second
ROOT_SHARE = 0.95
EVENT_LOOP = "run_app (aiohttp/web.py)"  # own time there is the event loop's C code (uvloop)


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def record(pid: int, seconds: float, raw_out: Path) -> subprocess.Popen[bytes]:
    """Starts sampling pid (and its workers) for `seconds` into a collapsed-stack file; only
    samples holding the GIL count, so that waiting threads do not pass for busy ones."""
    command = py_spy()
    if command is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    return subprocess.Popen(
        [
            *(command, "record", "--pid", str(pid), "--duration", str(int(seconds))),
            *("--rate", str(RATE), "--format", "raw", "--nolineno", "--subprocesses", "--gil"),
            "--native",  # C frames too: the collector's and uvloop's are telling
            *("--output", str(raw_out)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@dataclass(frozen=True)
class Profile:
    samples: int
    own: list[tuple[str, int]]
    inclusive: list[tuple[str, int]]


def stacks(raw: Path) -> Iterator[tuple[list[str], int]]:
    """Each collapsed stack of a profile, root first, without py-spy's process frame, and how
    many samples it holds."""
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        frames = [frame for frame in stack.split(";") if frame and not frame.startswith("process ")]
        if frames:
            yield frames, int(count_text)


def summarise(raw: Path, top: int = 20) -> Profile:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    samples = 0
    for frames, count in stacks(raw):
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):  # a recursive function counts once per sample
            inclusive[frame] += count
    # Frames on (nearly) every stack, the entry point down to the event loop, say nothing.
    telling = Counter({f: n for f, n in inclusive.items() if n < ROOT_SHARE * samples})
    return Profile(samples, own.most_common(top), telling.most_common(top))


def _label(frame: str) -> str:
    return f"`{frame}` (event loop: uvloop, socket I/O)" if frame == EVENT_LOOP else f"`{frame}`"


def markdown(profile: Profile) -> str:
    def table(title: str, rows: list[tuple[str, int]]) -> list[str]:
        lines = [f"| {title} | % of samples |", "| --- | ---: |"]
        return lines + [f"| {_label(name)} | {100 * n / profile.samples:.1f} |" for name, n in rows]

    return "\n".join(
        [
            f"{profile.samples} samples, each taken while the server held the GIL",
            "",
            *table("own time: function (file)", profile.own),
            "",
            *table("inclusive time: function (file)", profile.inclusive),
        ]
    )
