"""Writing files so that a reader never sees half of one.

Everything is written to a temporary file beside its target and renamed over
it only when complete; ``os.replace`` is atomic on one filesystem.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; it replaces ``path`` when the
    block completes and is removed when it fails.

    The temporary name keeps the suffix (``name.tmp.png``), since NumPy, Keras
    and matplotlib choose the format by it.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.stem}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | Path, obj, **kwargs) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically; ``kwargs`` go to :func:`json.dumps`."""
    write_text_atomic(path, json.dumps(obj, indent=2, **kwargs) + "\n")
