"""Trained local tiers kept on disk under the digest of what they learnt from, so that a restart does not train again.

A file holds numpy arrays and JSON text only (read with `allow_pickle=False`): a stray or damaged file can at
worst be ignored, never run. Files live in `$XDG_CACHE_HOME/supportbot/router/` (by default under ~/.cache),
written whole and renamed into place; any problem reading or writing there just means training as if there
were no store.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

log = structlog.get_logger(__name__)

# The code that trains is part of what a model was learnt from: a change to it makes old files unused.
_SOURCES = ("features.py", "fitting.py", "local.py", "store.py")
_KEEP = 8


def store_dir() -> Path:
    """`$XDG_CACHE_HOME/supportbot/router`, by default under ~/.cache."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "supportbot" / "router"


def code_version() -> str:
    """A digest of the router's training code."""
    digest = hashlib.sha256()
    package = resources.files("bot.router")
    for name in _SOURCES:
        digest.update(package.joinpath(name).read_bytes())
    return digest.hexdigest()[:16]


def load(key: str) -> tuple[Mapping[str, Any], Mapping[str, npt.NDArray[Any]]] | None:
    """(metadata, arrays) saved under `key`, or None when there is no usable file."""
    path = store_dir() / f"{key}.npz"
    try:
        with np.load(path, allow_pickle=False) as saved:
            arrays = {name: saved[name] for name in saved.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, UnicodeDecodeError) as exc:
        log.warning("router_store_unreadable", path=str(path), error=str(exc)[:200])
        return None
    if not isinstance(meta, dict):
        return None
    return meta, arrays


def save(key: str, meta: Mapping[str, Any], arrays: Mapping[str, npt.NDArray[Any]]) -> None:
    """Write the model under `key` (whole, then renamed into place) and keep only the newest few."""
    folder = store_dir()
    partial: Path | None = None
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        contents: dict[str, Any] = {"meta": np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8),
                                    **arrays}
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".tmp", delete=False) as handle:
            partial = Path(handle.name)
            np.savez(handle, **contents)
        os.replace(partial, folder / f"{key}.npz")
        partial = None
        kept = sorted(folder.glob("*.npz"), key=lambda path: path.stat().st_mtime, reverse=True)
        for old in kept[_KEEP:]:
            with contextlib.suppress(OSError):
                old.unlink()
    except OSError as exc:
        log.warning("router_store_unwritable", folder=str(folder), error=str(exc)[:200])
    finally:
        if partial is not None:
            with contextlib.suppress(OSError):
                partial.unlink()
