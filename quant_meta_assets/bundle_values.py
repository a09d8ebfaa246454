"""How an asset's value maps to a stored bundle (storage.write_bundle) and back.

A DataFrame or Series is one Parquet frame; a mapping keeps its pandas objects as frames and
the JSON-able rest in the manifest, with one level of nested mappings flattened (``outer__inner``).
A frame's ``attrs["lineage"]`` (publishing.lineage) is kept in the manifest and restored on load.
Shared by the Dagster IO manager and by readers of the published snapshot.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from quant_meta_assets.errors import StorageError

__all__ = ["join_value", "split_value"]

_VALUE_KEY = "__value__"
_NEST = "__"
_LINEAGE = "lineage"  # = publishing.lineage.KEY


def split_value(value: Any) -> tuple[dict[str, pd.DataFrame | pd.Series], dict[str, Any]]:
    """Frames (Parquet) and the JSON-able rest; one level of nested mappings is flattened."""
    if isinstance(value, (pd.DataFrame, pd.Series)):
        # a frame's lineage (publishing.lineage) rides in attrs; it is stored in the manifest
        return {_VALUE_KEY: value}, ({_LINEAGE: value.attrs[_LINEAGE]} if _LINEAGE in value.attrs else {})
    if not isinstance(value, Mapping):
        raise StorageError(f"cannot store a {type(value).__name__}; return a DataFrame, Series or mapping")
    frames: dict[str, pd.DataFrame | pd.Series] = {}
    meta: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, (pd.DataFrame, pd.Series)):
            frames[key] = item
        elif isinstance(item, Mapping) and any(isinstance(v, (pd.DataFrame, pd.Series)) for v in item.values()):
            for sub, sub_item in item.items():
                if isinstance(sub_item, (pd.DataFrame, pd.Series)):
                    frames[f"{key}{_NEST}{sub}"] = sub_item
                else:
                    meta[f"{key}{_NEST}{sub}"] = sub_item
        else:
            meta[key] = item
    return frames, meta


def join_value(frames: Mapping[str, Any], meta: Mapping[str, Any]) -> Any:
    if _VALUE_KEY in frames:
        value = frames[_VALUE_KEY]
        if _LINEAGE in meta:
            value.attrs[_LINEAGE] = meta[_LINEAGE]
        return value
    value: dict[str, Any] = {}
    for key, item in {**meta, **frames}.items():
        if _NEST in key:
            outer, inner = key.split(_NEST, 1)
            value.setdefault(outer, {})[inner] = item
        else:
            value[key] = item
    return value
