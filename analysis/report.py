"""Every piece of HTML the project writes: the one self-contained report of a sweep (config, leaderboard,
frontier plots) and the sections that later analyses add to it (geometry, rewinding). Plotly's JavaScript
is inlined once, so the file opens offline."""
from __future__ import annotations

import html
import json
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio

from analysis import replicates
from methods.interpolate import layer_of

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
           "#7f7f7f", "#bcbd22", "#393b79", "#637939", "#843c39", "#7b4173"]


def _colors(points: list[dict]) -> dict[str, str]:
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(sorted({p["method"] for p in points}))}


def _front_line(points: list[dict], x: str, y: str) -> tuple[list[float], list[float]]:
    """A method's front drawn as a staircase-free line through its non-dominated points, sorted by x."""
    ordered = sorted(points, key=lambda p: p[x])
    return [p[x] for p in ordered], [p[y] for p in ordered]


def _error_bars(points: list[dict], key: str) -> dict | None:
    """Plotly error bars from each point's `<key>_ci` interval (asymmetric: percentile intervals are)."""
    if not points or not all(p.get(f"{key}_ci") for p in points):
        return None
    return {"type": "data", "symmetric": False, "thickness": 1, "width": 3,
            "array": [p[f"{key}_ci"][1] - p[key] for p in points],
            "arrayminus": [p[key] - p[f"{key}_ci"][0] for p in points]}


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
                                 error_x=_error_bars(own, x), error_y=_error_bars(own, y),
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
    fig.update_xaxes(tickmode="linear", tick0=1, dtick=max(1, -(-len(progress) // 10)))  # whole trials, <= 10 ticks
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
    if isinstance(value, list) and len(value) == 2:  # an interval
        return f"[{value[0]:.4f}, {value[1]:.4f}]"
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
                                                                 "retention", "gain", "gain_ci", "forgetting",
                                                                 "forgetting_ci", "on_front"]))
    parts.append("<p>gain_ci, forgetting_ci: 95% paired bootstrap intervals over the evaluation items (items "
                 "resampled jointly for the base and the finetuned model, per task); error bars in the plots.</p>")
    parts.append("<h2>Frontiers</h2>")
    for i, fig in enumerate(figs.values()):
        parts.append(pio.to_html(fig, full_html=False, include_plotlyjs=(i == 0)))  # JS inlined once, no CDN
    matched = analysis.get("budget_matched", [])
    parts.append(f"<h2>Budget-matched comparisons (budgets within x{analysis['budget_factor']:g})</h2>")
    parts.append(_table(matched, ["a", "b", "a_params", "b_params", "budget_ratio", "dominates"]) if matched
                 else "<p class='pending'>no pair of methods has points at comparable budgets</p>")
    if analysis.get("replicates"):
        parts.append("<h2>Seeds as replicates</h2>" + replicates_section(analysis["replicates"]))
    for name, content in (sections or {}).items():
        parts.append(f"<h2>{html.escape(name)}</h2>" + (content or "<p class='pending'>not run yet</p>"))
    parts.append("<h2>Sweep config</h2><pre>" + html.escape(json.dumps(config, indent=2, default=str)) + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


# ------------------------------------------------------------------------ sections of later analyses


def replicates_section(analysis: dict) -> str:
    """Configuration means over seeds with their t intervals, and whether each dominance is significant."""
    names = [o["name"] for o in analysis["objectives"]]
    rows = []
    for row in analysis["configurations"]:
        rows.append({"configuration": row["label"], "method": row["method"], "setting": row["setting"],
                     "seeds": len(row["seeds"]), **{n: row[n] for n in names},
                     **{f"{n}_ci": row[f"{n}_ci"] for n in names}, "verdict": replicates.verdict(row)})
    return (f"<p>Trials that differ only in their seed, as one configuration: the mean over seeds with a 95% t "
            f"interval; the front is drawn over the means (hypervolume {analysis['hypervolume']:.5g}); a dominance "
            f"is significant when a Welch 95% interval in some objective excludes zero.</p>"
            + _table(rows, ["configuration", "method", "setting", "seeds", *[c for n in names for c in (n, f"{n}_ci")],
                            "verdict"]))


def geometry_section(out: dict, examples: dict[str, dict]) -> str:
    """The geometry section: correlations with forgetting, then profiles vs the pretrained spectrum (log
    axes), stable rank per layer, and the best metric against forgetting."""
    figs = []
    profiles = go.Figure()
    for trial_id, geometry in examples.items():
        key = next(k for k in geometry["modules"] if k.endswith("down_proj.weight"))
        profile = geometry["modules"][key]["retention_profile"]
        profiles.add_trace(go.Scatter(x=list(range(1, len(profile) + 1)), y=profile, mode="lines", name=f"{trial_id} {key}"))
    profiles.update_layout(title="Retention profile |u_i^T W_ft v_i - s_i| by singular index (a down_proj)",
                           xaxis_type="log", yaxis_type="log", xaxis_title="singular index i", template="plotly_white")
    figs.append(profiles)
    ranks = go.Figure()
    for trial_id, geometry in examples.items():
        per_layer: dict[int, list[float]] = {}
        for key, metrics in geometry["modules"].items():
            per_layer.setdefault(layer_of("." + key), []).append(metrics["stable_rank"])
        layers = sorted(k for k in per_layer if k is not None)
        ranks.add_trace(go.Scatter(x=layers, y=[sum(per_layer[l]) / len(per_layer[l]) for l in layers], name=trial_id))
    ranks.update_layout(title="Stable rank of dW per layer (mean over modules)", xaxis_title="layer", template="plotly_white")
    figs.append(ranks)
    best = out.get("best_predictor_of_forgetting")
    if best:
        scatter = go.Figure(go.Scatter(x=[r[best["metric"]] for r in out["rows"]], y=[r["forgetting"] for r in out["rows"]],
                                       mode="markers", text=[f"{r['trial_id']} step {r['step']}" for r in out["rows"]]))
        scatter.update_layout(title=f"{best['metric']} vs forgetting (Spearman {best['spearman']:+.2f})",
                              xaxis_title=best["metric"], yaxis_title="forgetting", template="plotly_white")
        figs.append(scatter)
    rows = "".join(f"<tr><td>{m}</td><td>{_signed(t['forgetting']['spearman'])}</td>"
                   f"<td>{_signed(t['forgetting']['pearson'])}</td><td>{_signed(t['gain']['spearman'])}</td>"
                   f"<td>{t['forgetting']['n']}</td></tr>" for m, t in out["correlations"].items())
    table = ("<table><thead><tr><th>metric</th><th>Spearman vs forgetting</th><th>Pearson vs forgetting</th>"
             f"<th>Spearman vs gain</th><th>n</th></tr></thead><tbody>{rows}</tbody></table>")
    return table + "".join(pio.to_html(f, full_html=False, include_plotlyjs=False) for f in figs)


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.3f}"


def rewind_section(summary: dict[str, Any]) -> str:
    """Per trial: target vs retention along the training trajectory and the interpolation path(s), with
    the chosen and final points (the paper's "training vs interpolation" figure); then the numbers."""
    parts = []
    for record in summary["trials"]:
        fig = go.Figure()
        for kind in sorted({p["kind"] for p in record["points"]} - {"base", "final"}):
            line = [p for p in record["points"] if p["kind"] == kind]
            fig.add_trace(go.Scatter(x=[p["retention"] for p in line], y=[p["target"] for p in line],
                                     mode="lines+markers", name=kind, text=[p["label"] for p in line]))
        for name, point, symbol in (("final", record["final"], "x"), ("chosen", record["chosen"], "star")):
            fig.add_trace(go.Scatter(x=[point["retention"]], y=[point["target"]], mode="markers", name=name,
                                     marker={"symbol": symbol, "size": 14}))
        fig.update_layout(title=f"{record['trial_id']} ({record['method']}): training vs interpolation (validation)",
                          xaxis_title="retention", yaxis_title="target", template="plotly_white", height=420)
        parts.append(pio.to_html(fig, full_html=False, include_plotlyjs=False))
    hv = summary["hypervolume"]
    rows = "".join(f"<tr><td>{r['trial_id']}</td><td>{r['method']}</td><td>{r['final']['target']:.4f} / "
                   f"{r['final']['retention']:.4f}</td><td>{r['chosen']['label']}</td><td>{r['chosen']['target']:.4f} / "
                   f"{r['chosen']['retention']:.4f}</td><td>{r['chosen_test']['target']:.4f} / "
                   f"{r['chosen_test']['retention']:.4f}</td></tr>" for r in summary["trials"])
    head = ("<p>Frontier hypervolume on validation scores: before rewinding <b>{:.5g}</b>, after <b>{:.5g}</b> "
            "(reference {}).</p>").format(hv["before"], hv["after"], hv["reference"])
    test = summary.get("test_hypervolume")
    if test:
        head += ("<p>On the test split (each chosen point scored once): before <b>{:.5g}</b> [{:.4g}, {:.4g}], after "
                 "<b>{:.5g}</b> [{:.4g}, {:.4g}], difference <b>{:+.5g}</b> [{:.4g}, {:.4g}] (95% paired bootstrap over "
                 "the test items; reference {}).</p>").format(
                     test["before"], *test["before_ci"], test["after"], *test["after_ci"], test["difference"],
                     *test["difference_ci"], test["reference"])
    table = ("<table><thead><tr><th>trial</th><th>method</th><th>final target / retention</th><th>chosen point</th>"
             "<th>chosen (validation)</th><th>chosen (test, scored once)</th></tr></thead><tbody>" + rows + "</tbody></table>")
    return head + table + "".join(parts)
