"""quant_meta_assets: combine trading-strategy sleeves into one meta-portfolio.

The public surface is exported lazily, so `import quant_meta_assets.prices` (or a Ray worker
unpickling a sleeve task) never pays for importing dagster or ray. `dagster ... -m quant_meta_assets`
finds `defs` through `__getattr__`/`__dir__`.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MetaContext": "quant_meta_assets.context",
    "StageRegistry": "quant_meta_assets.stages",
    "QuantSDK": "quant_meta_assets.sdk",
    "run_meta_pipeline": "quant_meta_assets.sdk",
    "RayComputeEngine": "quant_meta_assets.ray.compute",
    "read_published": "quant_meta_assets.publishing.snapshot",
    "defs": "quant_meta_assets.dagster_defs.definitions",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'quant_meta_assets' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
