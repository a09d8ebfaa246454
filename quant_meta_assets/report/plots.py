"""Plotly figures of the report (pure: frames in, ``go.Figure`` out, nothing written).

At book scale the figures draw the meta, the benchmarks and the ``top_k`` sleeves by average held
meta-weight (``top_sleeves``); weight and risk plots sum the other sleeves into one "other" band,
and every sleeve stays in the report's tables. Daily series longer than ``MAX_POINTS`` are drawn
at every m-th day (``display_positions``); drawdowns keep each bucket's deepest point.
"""

from __future__ import annotations

from collections.abc import Mapping

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

PALETTE = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#FF9DA6",
           "#9D755D", "#BAB0AC", "#EECA3B"]
META_COLOR = "#1F2A44"
BENCH_STYLE = {"equal_weight_meta": dict(color="#7F7F7F", dash="dash"),
               "benchmark": dict(color="#B0B0B0", dash="dot")}
MAX_POINTS = 1200  # daily display series longer than this are thinned (tables keep every day)
DEFAULT_TOP_K = 10
OTHER_COLOR = "#D0D4DC"


def top_sleeves(held: pd.DataFrame, k: int) -> list[str]:
    """The ``k`` sleeves with the largest average held meta-weight (ties: registry order)."""
    avg = held.abs().mean()
    order = sorted(range(len(avg)), key=lambda i: (-float(avg.iloc[i]), i))
    return [str(held.columns[i]) for i in order[: max(int(k), 0)]]


def display_step(n: int, max_points: int = MAX_POINTS) -> int:
    """Every how many rows a daily series of ``n`` rows is drawn."""
    return max(1, math.ceil(n / max_points))


def display_positions(n: int, max_points: int = MAX_POINTS) -> np.ndarray:
    """Row positions drawn for a daily series of ``n`` rows: every m-th row and the last."""
    pos = np.arange(0, n, display_step(n, max_points))
    return pos if n == 0 or pos[-1] == n - 1 else np.append(pos, n - 1)


def _bucket_minima(values: np.ndarray, max_points: int = MAX_POINTS) -> np.ndarray:
    """Position of the smallest value in each bucket of ``display_step`` rows (drawdowns keep their troughs)."""
    n = len(values)
    m = display_step(n, max_points)
    if m == 1:
        return np.arange(n)
    starts = np.arange(0, n, m)
    return np.array([a + int(np.argmin(values[a : a + m])) for a in starts])


def _display(values: np.ndarray) -> np.ndarray:
    """float32 for drawn series: 7 significant digits on screen, half of float64's bytes in the page."""
    return np.asarray(values, dtype=np.float32)


def _dates(index) -> list[str]:
    return [d.strftime("%Y-%m-%d") for d in pd.DatetimeIndex(index)]


def _with_other(frame: pd.DataFrame, shown) -> pd.DataFrame:
    """The ``shown`` columns plus one ``other (n sleeves)`` column holding the sum of the rest."""
    shown = [c for c in frame.columns if c in set(shown)]
    rest = [c for c in frame.columns if c not in set(shown)]
    out = frame[shown].copy()
    if rest:
        out[f"other ({len(rest)} sleeves)"] = frame[rest].sum(axis=1)
    return out


def _layout(fig: go.Figure, title: str, yformat: str | None = None, height: int = 420) -> go.Figure:
    fig.update_layout(
        template="plotly_white",
        title=dict(text=title, x=0.01, font=dict(size=15)),
        height=height,
        margin=dict(l=60, r=20, t=50, b=40),
        legend=dict(orientation="h", yanchor="top", y=-0.1, xanchor="left", x=0.0),  # under the plot
        hovermode="x unified",
        font=dict(family="Inter, Segoe UI, Helvetica, Arial, sans-serif", size=12),
    )
    if yformat:
        fig.update_yaxes(tickformat=yformat)
    return fig


def _sleeve_colors(names) -> dict[str, str]:
    colors = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}
    return colors | {n: OTHER_COLOR for n in names if str(n).startswith("other (")}


def _line_style(name: str, colors: Mapping[str, str]) -> dict:
    if name == "meta":
        return dict(color=META_COLOR, width=3)
    if name in BENCH_STYLE:
        return dict(width=2, **BENCH_STYLE[name])
    return dict(color=colors.get(name), width=1.4)


def cumulative_returns(returns: pd.DataFrame, sleeves) -> go.Figure:
    """Growth of 1 (compounded wealth) of each column, on a log y-axis by default (a linear / log
    switch between the title and the plot; the legend sits under the plot)."""
    colors = _sleeve_colors(sleeves)
    fig = go.Figure()
    pos = display_positions(len(returns))
    x = _dates(returns.index[pos])
    for name in returns.columns:
        values = returns[name].to_numpy(dtype=float)
        wealth = np.cumprod(1.0 + np.nan_to_num(values))
        wealth[np.cumsum(np.isfinite(values)) == 0] = np.nan  # a late sleeve: not drawn before it is live
        fig.add_trace(go.Scatter(x=x, y=_display(wealth[pos]), name=name, mode="lines", line=_line_style(name, colors)))
    fig = _layout(fig, "Growth of 1 (compounded)", height=460)
    fig.update_yaxes(type="log", tickformat=".3~g")
    fig.update_layout(  # the switch sits under the title, above the plot: clear of the title and the modebar
        margin=dict(l=60, r=20, t=80, b=40),
        updatemenus=[dict(
            type="buttons", direction="left", x=0.0, xanchor="left", y=1.01, yanchor="bottom",
            showactive=True, active=1, pad=dict(t=0, b=0), font=dict(size=11),
            buttons=[dict(label="linear", method="relayout", args=[{"yaxis.type": "linear"}]),
                     dict(label="log", method="relayout", args=[{"yaxis.type": "log"}])],
        )],
    )
    return fig


def drawdowns(returns: pd.DataFrame, sleeves) -> go.Figure:
    colors = _sleeve_colors(sleeves)
    fig = go.Figure()
    for name in returns.columns:
        wealth = np.concatenate([[1.0], np.cumprod(1.0 + returns[name].to_numpy())])
        dd = (wealth / np.maximum.accumulate(wealth) - 1.0)[1:]
        pos = _bucket_minima(dd)
        fig.add_trace(go.Scatter(x=_dates(returns.index[pos]), y=_display(dd[pos]), name=name, mode="lines",
                                 line=_line_style(name, colors),
                                 fill="tozeroy" if name == "meta" else None,
                                 fillcolor="rgba(31,42,68,0.12)" if name == "meta" else None))
    return _layout(fig, "Drawdown from running peak", ".0%")


def meta_weights_area(meta_weights_daily: pd.DataFrame, rebalance_dates, shown=None) -> go.Figure:
    frame = meta_weights_daily if shown is None else _with_other(meta_weights_daily, shown)
    colors = _sleeve_colors(frame.columns)
    pos = display_positions(len(frame))
    x = _dates(frame.index[pos])
    fig = go.Figure()
    for name in frame.columns:
        fig.add_trace(go.Scatter(x=x, y=_display(frame[name].to_numpy()[pos]),
                                 name=name, mode="lines", stackgroup="w",
                                 line=dict(width=0.5, color=colors[name])))
    # one trace of None-separated segments: add_vline per date is quadratic in plotly
    dates = _dates(rebalance_dates)
    fig.add_trace(go.Scatter(x=[v for d in dates for v in (d, d, None)], y=[0, 1, None] * len(dates),
                             mode="lines", name="rebalance", showlegend=False, hoverinfo="skip",
                             line=dict(color="rgba(0,0,0,0.15)", width=1, dash="dot")))
    fig.update_yaxes(range=[0, 1])
    return _layout(fig, "Held meta-weights (drifting; dotted lines = rebalances)", ".0%")


def realised_risk_by_year(realised: pd.DataFrame, shown=None) -> go.Figure:
    """Realised risk contribution of each sleeve per calendar year, cov(m_s r_s, r_meta) / var(r_meta)
    (sums to 100% each year; a hedge contributes negatively)."""
    frame = realised if shown is None else _with_other(realised, shown)
    colors = _sleeve_colors(frame.columns)
    years = [str(y) for y in frame.index]
    fig = go.Figure()
    for name in frame.columns:
        fig.add_trace(go.Bar(x=years, y=frame[name].to_numpy(), name=name, marker_color=colors[name]))
    fig.update_layout(barmode="relative", bargap=0.15)
    return _layout(fig, "Realised risk contribution by sleeve per year (sums to 100%)", ".0%")


def monthly_heatmap(monthly: pd.DataFrame, title: str = "Monthly returns of the meta (compounded)") -> go.Figure:
    """Years x months of compounded returns, red below 0 and green above (colour centred on 0)."""
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    z = monthly.to_numpy(dtype=float)
    text = [["" if not np.isfinite(v) else f"{v * 100:.1f}" for v in row] for row in z]
    limit = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 0.1
    fig = go.Figure(go.Heatmap(
        z=z, x=months, y=[str(y) for y in monthly.index], zmid=0.0, zmin=-limit, zmax=limit,
        colorscale="RdYlGn", text=text, texttemplate="%{text}", showscale=False,
        hovertemplate="%{y} %{x}: %{z:.2%}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", type="category")
    fig = _layout(fig, title + " (%)", height=max(300, 22 * len(monthly) + 110))
    fig.update_layout(hovermode="closest")
    return fig


def rolling_lines(rolling: pd.DataFrame, title: str, yformat: str | None = None) -> go.Figure:
    """One line per column (meta, equal_weight_meta, benchmark), thinned like the other daily series."""
    frame = rolling.dropna(how="all")
    pos = display_positions(len(frame))
    x = _dates(frame.index[pos])
    fig = go.Figure()
    for name in frame.columns:
        fig.add_trace(go.Scatter(x=x, y=_display(frame[name].to_numpy()[pos]), name=name, mode="lines",
                                 line=_line_style(name, {})))
    return _layout(fig, title, yformat, height=360)


def correlation_heatmap(returns: pd.DataFrame, title: str = "Correlation of daily returns over the live period") -> go.Figure:
    corr = returns.corr()
    fig = go.Figure(go.Heatmap(
        z=corr.to_numpy(), x=list(corr.columns), y=list(corr.index), zmin=-1, zmax=1,
        colorscale="RdBu", reversescale=True, text=np.round(corr.to_numpy(), 2),
        texttemplate="%{text}", hovertemplate="%{y} / %{x}: %{z:.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig = _layout(fig, title, height=max(380, 22 * len(corr) + 120))
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
    pe = display_positions(len(exposure))
    for col, style in (("gross", dict(color=META_COLOR, width=2.5)),
                       ("net", dict(color=META_COLOR, width=2.5, dash="dash"))):
        fig.add_trace(go.Scatter(x=_dates(exposure.index[pe]), y=_display(exposure[col].to_numpy()[pe]),
                                 name=f"{col} exposure", mode="lines", line=style))
    pa = display_positions(len(asset_weights))
    xa = _dates(asset_weights.index[pa])
    for name in chosen:
        fig.add_trace(go.Scatter(x=xa, y=_display(asset_weights[name].to_numpy()[pa]), name=name,
                                 mode="lines", line=dict(width=1.3, color=colors[name])))
    return _layout(fig, f"Gross / net exposure and the top {len(chosen)} asset weights over time", ".0%")


def turnover_per_year(turnover: pd.DataFrame) -> go.Figure:
    """Per calendar year, each column's turnover in multiples of the book's value per year (x per
    year): the meta's sleeve reallocation and the books' asset turnover."""
    years = [str(y) for y in turnover.index]
    styles = {"meta: sleeve reallocation": META_COLOR, "meta: asset turnover (netted book)": "#4C78A8",
              "stand-alone: asset turnover": "#BAB0AC"}
    fig = go.Figure()
    for name in turnover.columns:
        fig.add_trace(go.Bar(x=years, y=turnover[name].to_numpy(), name=name,
                             marker_color=styles.get(name), hovertemplate="%{y:.2f}× per year"))
    fig.update_layout(barmode="group")
    fig.update_yaxes(title_text="× per year", ticksuffix="×")
    return _layout(fig, "Turnover per calendar year (× the book's value per year, two-sided)")


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
