"""meta.report: metrics, forensics (reconciliations, attribution, risk contributions), plotly
figures and one self-contained HTML report. Pure: no dagster import.

Modules: ``portfolio`` (meta/benchmark return series, drift, turnover), ``forensics``,
``plots``, ``html`` (rendering + atomic writes), ``summary`` (JSON summary, Markdown, headline
numbers), ``build`` (``build_report``).
"""

from __future__ import annotations

from quant_meta_assets.report.build import REPORT_CONVENTIONS, build_report
from quant_meta_assets.report.summary import headline_metrics, report_markdown_summary

__all__ = ["REPORT_CONVENTIONS", "build_report", "headline_metrics", "report_markdown_summary"]
