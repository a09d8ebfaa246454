"""Code as part of an output's identity: hashes of the source that computes it.

Two uses, one definition:
- a sleeve's ``code_hash`` (recorded with every stored sleeve and compared by the gate and the
  sensors): its strategy's source plus the sleeve engine's, so an edited strategy makes that
  sleeve stale ("strategy code changed") and an edited engine makes every sleeve stale;
- each Dagster asset's ``code_version``: the hash of the modules that implement it, so Dagster's
  own staleness ("code version changed") agrees.

Sources are read from disk (never ``inspect`` of the loaded code), so a long-lived process sees
an edit made after it imported the module. An installed distribution (site-packages) is
identified by its name and version instead. Pure core: no dagster, no ray.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from collections.abc import Iterable
from pathlib import Path

__all__ = ["ASSET_SOURCES", "ENGINE_SOURCES", "asset_code_version", "source_hash", "strategy_code_hash"]

PACKAGE = Path(__file__).resolve().parent

# package-relative files (or folders: every .py under them) that compute each output
ENGINE_SOURCES = ("sleeves/engine.py", "prices.py", "rates.py")
ASSET_SOURCES: dict[str, tuple[str, ...]] = {
    "prices": ("prices.py",),
    "sleeves": (*ENGINE_SOURCES, "sleeves/strategies.py", "ray/compute.py"),
    "meta/returns": ("meta/returns.py", "meta/incremental.py"),
    "meta/optimize": ("meta/optimize", "meta/incremental.py", "rates.py"),
    "meta/flatten": ("meta/flatten.py", "meta/drift.py", "meta/incremental.py"),
    "meta/report": ("report", "metrics.py", "meta/costs.py", "meta/drift.py", "rates.py"),
    "meta/published": ("publishing",),
}


def _files(paths: Iterable[Path]) -> list[Path]:
    out = []
    for path in paths:
        out.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return out


@functools.lru_cache(maxsize=256)
def _file_digest(path: str, _mtime_ns: int, _size: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def source_hash(paths: Iterable[Path | str]) -> str:
    """sha256 (16 hex) over the bytes of each file (folders: their .py files, sorted), with names.
    A file is re-read only when its size or modification time changed."""
    digest = hashlib.sha256()
    for file in _files(Path(p) for p in paths):
        stat = file.stat()
        digest.update(f"{file.name}\0{_file_digest(str(file), stat.st_mtime_ns, stat.st_size)}\0".encode())
    return digest.hexdigest()[:16]


def asset_code_version(asset: str) -> str:
    """The code version of one of this package's assets (a key of ASSET_SOURCES)."""
    return source_hash(PACKAGE / p for p in ASSET_SOURCES[asset])


@functools.cache
def _engine_hash() -> str:
    return source_hash(PACKAGE / p for p in ENGINE_SOURCES)


def _distribution_of(origin: Path) -> str | None:
    """``name==version`` of the installed distribution that owns ``origin`` (None if not installed)."""
    if not any(part in ("site-packages", "dist-packages") for part in origin.parts):
        return None
    from importlib import metadata

    top = origin.parts[[i for i, part in enumerate(origin.parts) if part in ("site-packages", "dist-packages")][-1] + 1]
    for dist in metadata.distributions():
        names = (dist.read_text("top_level.txt") or "").split() or [dist.metadata["Name"].replace("-", "_")]
        if top.removesuffix(".py") in names:
            return f"{dist.metadata['Name']}=={dist.version}"
    return None


def strategy_code_hash(spec: str) -> str:
    """The code identity of a sleeve whose strategy is ``spec`` (a built-in name or
    ``package.module:function``): the strategy module's source (an installed package: its
    version) plus the sleeve engine's source."""
    if ":" not in spec:
        strategy = source_hash([PACKAGE / "sleeves" / "strategies.py"])
    else:
        module = spec.partition(":")[0]
        found = importlib.util.find_spec(module)
        origin = Path(found.origin) if found is not None and found.origin not in (None, "built-in", "frozen") else None
        if origin is None:
            strategy = f"unlocated:{module}"
        else:
            strategy = _distribution_of(origin) or source_hash([origin])
    return hashlib.sha256(f"{strategy}|{_engine_hash()}".encode()).hexdigest()[:16]
