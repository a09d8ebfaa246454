"""The layout's promises: a pure core (no dagster, no ray at import) and a lazy public surface."""

import subprocess
import sys

CORE = [
    "quant_meta_assets.prices", "quant_meta_assets.benchmark", "quant_meta_assets.sleeves.registry", "quant_meta_assets.sleeves.strategies",
    "quant_meta_assets.sleeves.engine", "quant_meta_assets.ray.compute", "quant_meta_assets.ray.cluster",
    "quant_meta_assets.storage",
    "quant_meta_assets.meta.returns", "quant_meta_assets.meta.optimize", "quant_meta_assets.meta.flatten",
    "quant_meta_assets.metrics", "quant_meta_assets.report", "quant_meta_assets.context",
    "quant_meta_assets.stages", "quant_meta_assets.sdk",
    "quant_meta_assets.run_summary", "quant_meta_assets.sleeves.strategy_docs",
    "quant_meta_assets.publishing.snapshot", "quant_meta_assets.publishing.lineage",
    "quant_meta_assets.publishing.retention", "quant_meta_assets.code_versions", "quant_meta_assets.sleeves.status",
]


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, timeout=120, check=True)
    return set(out.stdout.split())


def test_core_and_sdk_import_neither_dagster_nor_ray():
    loaded = _modules_after("; ".join(f"import {m}" for m in CORE)
                            + "\nfrom quant_meta_assets import QuantSDK, MetaContext, StageRegistry, RayComputeEngine, run_meta_pipeline")
    assert not {m for m in loaded if m.split(".")[0] in ("dagster", "ray", "dagster_ray")}


def test_definitions_load_without_ray():
    loaded = _modules_after("import quant_meta_assets as q; q.defs")
    assert "dagster" in loaded and "ray" not in loaded


def test_defs_attribute_is_the_definitions_even_after_importing_a_submodule():
    import dagster as dg

    import quant_meta_assets
    import quant_meta_assets.dagster_defs.sleeves  # noqa: F401

    assert isinstance(quant_meta_assets.defs, dg.Definitions)
