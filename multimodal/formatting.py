"""Small text helpers shared by the printed summary and the pictures."""
from __future__ import annotations


def plural(n: int, one: str, many: str | None = None) -> str:
    """``"1 segment"``, ``"3 segments"``; ``many`` for irregular plurals."""
    return f"{n} {one if n == 1 else many or one + 's'}"


def mmss(seconds: float) -> str:
    """``75.0`` as ``"1:15"``, ``3725`` as ``"1:02:05"``."""
    s = int(round(seconds))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"
