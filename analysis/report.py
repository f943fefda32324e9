"""One self-contained HTML report of a sweep: config, leaderboard, frontier plots, and sections that later
analyses (geometry, rewinding) fill in. Plotly's JavaScript is inlined once, so the file opens offline."""
from __future__ import annotations

import html
import json
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
           "#7f7f7f", "#bcbd22", "#393b79", "#637939", "#843c39", "#7b4173"]


def _colors(points: list[dict]) -> dict[str, str]:
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(sorted({p["method"] for p in points}))}


def _front_line(points: list[dict], x: str, y: str) -> tuple[list[float], list[float]]:
    """A method's front drawn as a staircase-free line through its non-dominated points, sorted by x."""
    ordered = sorted(points, key=lambda p: p[x])
    return [p[x] for p in ordered], [p[y] for p in ordered]


def plane_figure(analysis: dict, x: str, y: str, title: str, x_title: str, y_title: str,
                 overlay: list[dict] | None = None) -> go.Figure:
    """Scatter of every point with each method's front as a line; the global front ringed."""
    points = analysis["points"]
    colors = _colors(points + (overlay or []))
    fig = go.Figure()
    for method, color in colors.items():
        own = [p for p in points if p["method"] == method]
        if not own:
            continue
        fig.add_trace(go.Scatter(x=[p[x] for p in own], y=[p[y] for p in own], mode="markers", name=method,
                                 marker={"color": color, "size": 10,
                                         "line": {"width": [3 if p["on_front"] else 0 for p in own], "color": "black"}},
                                 text=[p["label"] for p in own], hovertemplate="%{text}<br>%{x:.4f}, %{y:.4f}"))
        front = [p for p in own if p["label"] in analysis["methods"][method]["front"]]
        fx, fy = _front_line(front, x, y)
        fig.add_trace(go.Scatter(x=fx, y=fy, mode="lines", line={"color": color, "dash": "dot"},
                                 showlegend=False, hoverinfo="skip"))
    for p in overlay or []:
        fig.add_trace(go.Scatter(x=[p[x]], y=[p[y]], mode="markers", name=f"published {p['label']}",
                                 marker={"symbol": "diamond-open", "size": 9, "color": colors.get(p["method"], "grey")}))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, template="plotly_white", height=480)
    return fig


def hypervolume_figure(analysis: dict) -> go.Figure:
    methods = sorted(analysis["methods"], key=lambda m: -analysis["methods"][m]["hypervolume"])
    fig = go.Figure(go.Bar(x=methods, y=[analysis["methods"][m]["hypervolume"] for m in methods]))
    ref = ", ".join(f"{k} = {v:.4g}" for k, v in analysis["reference"].items())
    fig.update_layout(title=f"Hypervolume per method (reference: {ref})", template="plotly_white", height=380)
    return fig


def progress_figure(progress: list[float]) -> go.Figure:
    fig = go.Figure(go.Scatter(x=list(range(1, len(progress) + 1)), y=progress, mode="lines+markers"))
    fig.update_layout(title="Hypervolume over trials (search progress)", xaxis_title="trials finished",
                      yaxis_title="hypervolume", template="plotly_white", height=380)
    return fig


def budget_figure(analysis: dict, objective: str) -> go.Figure:
    points = [p for p in analysis["points"] if p.get("params")]
    colors = _colors(points)
    fig = go.Figure()
    for method, color in colors.items():
        own = [p for p in points if p["method"] == method]
        fig.add_trace(go.Scatter(x=[p["params"] for p in own], y=[p[objective] for p in own], mode="markers",
                                 name=method, marker={"color": color, "size": 9}, text=[p["label"] for p in own]))
    fig.update_layout(title=f"Budget vs {objective}", xaxis_type="log", xaxis_title="trainable parameters",
                      yaxis_title=objective, template="plotly_white", height=380)
    return fig


def figures(analysis: dict, progress: list[float] | None = None, overlay: list[dict] | None = None) -> dict[str, go.Figure]:
    figs = {
        "target_retention": plane_figure(analysis, "retention", "target", "Target vs retention (the paper's "
                                         "Target / General plane)", "retention score", "target score"),
        "gain_forgetting": plane_figure(analysis, "forgetting", "gain", "Gain vs forgetting",
                                        "forgetting (lower is better)", "target gain (higher is better)", overlay),
        "hypervolume": hypervolume_figure(analysis),
    }
    if progress:
        figs["progress"] = progress_figure(progress)
    for objective in ("gain", "forgetting"):
        figs[f"budget_{objective}"] = budget_figure(analysis, objective)
    return figs


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, bool):
        return "yes" if value else ""
    return "" if value is None else str(value)


STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:12px}
.pending{color:#777;font-style:italic}"""


def render(title: str, config: dict, leaderboard: list[dict], analysis: dict, figs: dict[str, go.Figure],
           sections: dict[str, str] | None = None) -> str:
    """The report as one HTML string. `sections` maps a title to HTML that later analyses provide
    (geometry, rewinding); titles without content are shown as not run yet."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    ref = ", ".join(f"{k} = {v:.4g}" for k, v in analysis["reference"].items())
    parts.append(f"<p>Global hypervolume <b>{analysis['hypervolume']:.5g}</b> (reference point: {ref}); "
                 f"{len(analysis['front'])} of {len(analysis['points'])} points on the front.</p>")
    parts.append("<h2>Leaderboard</h2>" + _table(leaderboard, ["trial", "method", "setting", "params", "target",
                                                                 "retention", "gain", "forgetting", "on_front"]))
    parts.append("<h2>Frontiers</h2>")
    for i, fig in enumerate(figs.values()):
        parts.append(pio.to_html(fig, full_html=False, include_plotlyjs=(i == 0)))  # JS inlined once, no CDN
    matched = analysis.get("budget_matched", [])
    parts.append(f"<h2>Budget-matched comparisons (budgets within x{analysis['budget_factor']:g})</h2>")
    parts.append(_table(matched, ["a", "b", "a_params", "b_params", "budget_ratio", "dominates"]) if matched
                 else "<p class='pending'>no pair of methods has points at comparable budgets</p>")
    for name, content in (sections or {}).items():
        parts.append(f"<h2>{html.escape(name)}</h2>" + (content or "<p class='pending'>not run yet</p>"))
    parts.append("<h2>Sweep config</h2><pre>" + html.escape(json.dumps(config, indent=2, default=str)) + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)
