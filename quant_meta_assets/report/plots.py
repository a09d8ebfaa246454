"""Plotly figures of the report (pure: frames in, ``go.Figure`` out, nothing written)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go

PALETTE = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#FF9DA6",
           "#9D755D", "#BAB0AC", "#EECA3B"]
META_COLOR = "#1F2A44"
BENCH_STYLE = {"equal_weight_meta": dict(color="#7F7F7F", dash="dash"),
               "sp500": dict(color="#B0B0B0", dash="dot")}


def _layout(fig: go.Figure, title: str, yformat: str | None = None, height: int = 420) -> go.Figure:
    fig.update_layout(
        template="plotly_white",
        title=dict(text=title, x=0.01, font=dict(size=15)),
        height=height,
        margin=dict(l=60, r=20, t=50, b=40),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0),
        hovermode="x unified",
        font=dict(family="Inter, Segoe UI, Helvetica, Arial, sans-serif", size=12),
    )
    if yformat:
        fig.update_yaxes(tickformat=yformat)
    return fig


def _sleeve_colors(names) -> dict[str, str]:
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}


def _line_style(name: str, colors: Mapping[str, str]) -> dict:
    if name == "meta":
        return dict(color=META_COLOR, width=3)
    if name in BENCH_STYLE:
        return dict(width=2, **BENCH_STYLE[name])
    return dict(color=colors.get(name), width=1.4)


def cumulative_returns(returns: pd.DataFrame, sleeves) -> go.Figure:
    """Compounded cumulative return of each column (meta, benchmarks, sleeves)."""
    colors = _sleeve_colors(sleeves)
    fig = go.Figure()
    for name in returns.columns:
        cum = (1.0 + returns[name]).cumprod() - 1.0
        fig.add_trace(go.Scatter(x=cum.index, y=cum.to_numpy(), name=name, mode="lines",
                                 line=_line_style(name, colors)))
    return _layout(fig, "Cumulative return (compounded)", ".0%")


def drawdowns(returns: pd.DataFrame, sleeves) -> go.Figure:
    colors = _sleeve_colors(sleeves)
    fig = go.Figure()
    for name in returns.columns:
        wealth = np.concatenate([[1.0], np.cumprod(1.0 + returns[name].to_numpy())])
        dd = (wealth / np.maximum.accumulate(wealth) - 1.0)[1:]
        fig.add_trace(go.Scatter(x=returns.index, y=dd, name=name, mode="lines",
                                 line=_line_style(name, colors),
                                 fill="tozeroy" if name == "meta" else None,
                                 fillcolor="rgba(31,42,68,0.12)" if name == "meta" else None))
    return _layout(fig, "Drawdown from running peak", ".0%")


def meta_weights_area(meta_weights_daily: pd.DataFrame, rebalance_dates) -> go.Figure:
    colors = _sleeve_colors(meta_weights_daily.columns)
    fig = go.Figure()
    for name in meta_weights_daily.columns:
        fig.add_trace(go.Scatter(x=meta_weights_daily.index, y=meta_weights_daily[name].to_numpy(),
                                 name=name, mode="lines", stackgroup="w",
                                 line=dict(width=0.5, color=colors[name])))
    # one trace of None-separated segments: add_vline per date is quadratic in plotly
    dates = list(rebalance_dates)
    fig.add_trace(go.Scatter(x=[v for d in dates for v in (d, d, None)], y=[0, 1, None] * len(dates),
                             mode="lines", name="rebalance", showlegend=False, hoverinfo="skip",
                             line=dict(color="rgba(0,0,0,0.15)", width=1, dash="dot")))
    fig.update_yaxes(range=[0, 1])
    return _layout(fig, "Held meta-weights (drifting; dotted lines = rebalances)", ".0%")


def risk_contributions_over_time(ex_ante: pd.DataFrame) -> go.Figure:
    colors = _sleeve_colors(ex_ante.columns)
    fig = go.Figure()
    for name in ex_ante.columns:
        fig.add_trace(go.Bar(x=ex_ante.index, y=ex_ante[name].to_numpy(), name=name,
                             marker_color=colors[name]))
    fig.update_layout(barmode="relative", bargap=0.15)
    return _layout(fig, "Ex-ante risk contribution by sleeve at each rebalance (sums to 100%)", ".0%")


def correlation_heatmap(returns: pd.DataFrame) -> go.Figure:
    corr = returns.corr()
    fig = go.Figure(go.Heatmap(
        z=corr.to_numpy(), x=list(corr.columns), y=list(corr.index), zmin=-1, zmax=1,
        colorscale="RdBu", reversescale=True, text=np.round(corr.to_numpy(), 2),
        texttemplate="%{text}", hovertemplate="%{y} / %{x}: %{z:.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig = _layout(fig, "Correlation of daily returns over the live period", height=380)
    fig.update_layout(hovermode="closest")
    return fig


def latest_exposures(asset_weights: pd.DataFrame, top: int = 15) -> go.Figure:
    last = asset_weights.iloc[-1]
    chosen = last.abs().sort_values(ascending=False).head(top).index
    values = last[chosen].iloc[::-1]
    fig = go.Figure(go.Bar(
        x=values.to_numpy(), y=list(values.index), orientation="h",
        marker_color=["#E45756" if v < 0 else "#4C78A8" for v in values.to_numpy()],
        hovertemplate="%{y}: %{x:.2%}<extra></extra>"))
    fig = _layout(fig, f"Top {len(chosen)} asset weights on {asset_weights.index[-1].date()} "
                       "(look-through)", height=max(300, 26 * len(chosen) + 90))
    fig.update_xaxes(tickformat=".0%")
    fig.update_layout(hovermode="closest", showlegend=False)
    return fig


def exposures_over_time(asset_weights: pd.DataFrame, exposure: pd.DataFrame, top: int = 8) -> go.Figure:
    chosen = asset_weights.abs().mean().sort_values(ascending=False).head(top).index
    colors = _sleeve_colors(chosen)
    fig = go.Figure()
    for col, style in (("gross", dict(color=META_COLOR, width=2.5)),
                       ("net", dict(color=META_COLOR, width=2.5, dash="dash"))):
        fig.add_trace(go.Scatter(x=exposure.index, y=exposure[col].to_numpy(), name=f"{col} exposure",
                                 mode="lines", line=style))
    for name in chosen:
        fig.add_trace(go.Scatter(x=asset_weights.index, y=asset_weights[name].to_numpy(), name=name,
                                 mode="lines", line=dict(width=1.3, color=colors[name])))
    return _layout(fig, f"Gross / net exposure and the top {len(chosen)} asset weights over time", ".0%")


def turnover_per_rebalance(turnover: Mapping[str, pd.Series], sleeves) -> go.Figure:
    colors = _sleeve_colors(sleeves)
    fig = go.Figure()
    for name, series in turnover.items():
        s = pd.Series(series, dtype=float).dropna()
        if name == "meta":
            fig.add_trace(go.Bar(x=s.index, y=s.to_numpy(), name="meta (sleeve reallocation)",
                                 marker_color=META_COLOR, opacity=0.85))
        else:
            fig.add_trace(go.Scatter(x=s.index, y=s.to_numpy(), name=name, mode="markers+lines",
                                     line=dict(width=1, color=colors.get(name)), marker=dict(size=5)))
    return _layout(fig, "Two-sided turnover per rebalance", ".0%")


def crossing_savings(yearly: pd.DataFrame) -> go.Figure:
    """Per year: what the stand-alone meta and the netted book pay (bps of book value), and the
    savings of running the sleeves in one account, split into netting and rate."""
    years = [str(y) for y in yearly.index]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=years, y=yearly["standalone_cost"].to_numpy() * 1e4, name="stand-alone cost",
                         marker_color="#BAB0AC"))
    fig.add_trace(go.Bar(x=years, y=yearly["book_cost"].to_numpy() * 1e4, name="netted book cost",
                         marker_color=META_COLOR))
    fig.add_trace(go.Scatter(x=years, y=yearly["savings_cost_netting"].to_numpy() * 1e4, mode="lines+markers",
                             name="savings: netting (crossed volume x book rate)",
                             line=dict(color="#54A24B", width=2)))
    fig.add_trace(go.Scatter(x=years, y=yearly["savings_cost"].to_numpy() * 1e4, mode="lines+markers",
                             name="savings: total", line=dict(color="#F58518", width=2)))
    fig.update_layout(barmode="group")
    fig.update_yaxes(title_text="bps of book value")
    return _layout(fig, "Trading costs per year and internal crossing savings (bps)")
