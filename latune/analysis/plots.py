"""Figures of a sweep: class-wise errors of a trial, and the Pareto front (MLflow artifacts, and the front files
beside results.parquet, latune.analysis.front_files).

Matplotlib figures are built on ``matplotlib.figure.Figure`` with the Agg canvas (no pyplot, no global
backend, no display needed); the interactive front is plotly HTML, with plotly.js embedded for MLflow (its UI
may be offline) or loaded from plotly's CDN. Tables are the sweep tables of ``latune.analysis.results`` (one
row per trial, objective columns, ``pareto_rank`` with 0 = front).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Literal

import pandas as pd

__all__ = ["class_errors", "class_error_figure", "pairwise_figure", "front_html", "save"]

_FRONT, _OTHER = "#d62728", "#9e9e9e"  # front trials red, dominated ones grey


def class_errors(result: Mapping[str, Any]) -> pd.DataFrame | None:
    """Per-class error rates of one report: columns ``class``, then ``<split>_<clean|robust>_error`` for
    the validation split (``val``) and, in the last epoch, the test split (``test``); None if absent."""
    columns: dict[str, Any] = {}
    for split, prefix in (("val", ""), ("test", "test_")):
        for kind in ("clean", "robust"):
            values = result.get(f"{prefix}{kind}_class_error")
            if isinstance(values, (list, tuple)) and values:
                columns[f"{split}_{kind}_error"] = [float(v) for v in values]
    if not columns:
        return None
    classes = max(len(v) for v in columns.values())
    table = pd.DataFrame({"class": range(classes)})
    for name, values in columns.items():
        table[name] = pd.Series(values, dtype=float)
    return table


def class_error_figure(errors: pd.DataFrame, title: str) -> Any:
    """Grouped bars: clean vs robust error per class, on the test split when it is there, else validation."""
    from matplotlib.figure import Figure

    split = "test" if "test_clean_error" in errors else "val"
    figure = Figure(figsize=(max(6.0, 0.45 * len(errors) + 2), 3.6), layout="constrained")
    axes = figure.add_subplot()
    width = 0.4
    x = errors["class"].to_numpy(dtype=float)
    for offset, kind, color in ((-width / 2, "clean", "#1f77b4"), (width / 2, "robust", _FRONT)):
        column = f"{split}_{kind}_error"
        if column in errors:
            axes.bar(x + offset, errors[column], width, label=f"{kind} error", color=color)
    axes.set_xticks(x, [str(int(c)) for c in errors["class"]])
    axes.set_ylim(0, 1.15)  # headroom for the legend above bars at error 1
    axes.set_xlabel("class")
    axes.set_ylabel("error rate")
    axes.set_title(f"{title}: class-wise error ({'test' if split == 'test' else 'validation'} split)")
    axes.legend(loc="upper center", ncol=2, fontsize="small")
    return figure


def _label(metric: str, direction: str) -> str:
    return f"{metric} ({'higher' if direction == 'max' else 'lower'} is better)"


def pairwise_figure(table: pd.DataFrame, objectives: Mapping[str, str]) -> Any:
    """Scatter plot of every pair of objectives over all finished trials, the Pareto front in red."""
    from matplotlib.figure import Figure

    names = list(objectives)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]] or [(names[0], names[0])]
    figure = Figure(figsize=(4.6 * len(pairs), 4.2), layout="constrained")
    front = table["pareto_rank"] == 0
    for index, (x, y) in enumerate(pairs, start=1):
        axes = figure.add_subplot(1, len(pairs), index)
        axes.scatter(table.loc[~front, x], table.loc[~front, y], c=_OTHER, s=28, label="dominated")
        axes.scatter(table.loc[front, x], table.loc[front, y], c=_FRONT, s=44, edgecolors="black",
                     linewidths=0.6, label="Pareto front", zorder=3)
        axes.set_xlabel(_label(x, objectives[x]))
        axes.set_ylabel(_label(y, objectives[y]))
        axes.grid(alpha=0.3)
    figure.axes[0].legend(loc="best", fontsize="small")
    figure.suptitle(f"{len(table)} finished trials, {int(front.sum())} on the Pareto front")
    return figure


def front_html(table: pd.DataFrame, objectives: Mapping[str, str], hover: Sequence[str],
               plotlyjs: Literal["inline", "cdn"] = "inline") -> str:
    """A standalone HTML page: the trials in objective space, 3-D for three or more objectives (the first three),
    2-D for two, the front in red; hover shows ``hover`` columns. ``plotlyjs``: ``inline`` embeds plotly.js
    (about 3.5 MB; opens offline), ``cdn`` loads it from cdn.plot.ly when the page opens (a few kB)."""
    import plotly.graph_objects as go

    names = list(objectives)[:3]
    shown = [c for c in hover if c in table]
    figure = go.Figure()
    for on_front, name, color in ((False, "dominated", _OTHER), (True, "Pareto front", _FRONT)):
        part = table[(table["pareto_rank"] == 0) == on_front]
        text = ["<br>".join(f"{c}: {row[c]}" for c in shown) for _, row in part.iterrows()]
        axes = {key: part[metric] for key, metric in zip("xyz", names)}
        if len(names) >= 3:
            figure.add_trace(go.Scatter3d(mode="markers", name=name, text=text, marker=dict(color=color, size=5),
                                          **axes))
        else:
            axes.setdefault("y", part[names[0]])
            figure.add_trace(go.Scatter(mode="markers", name=name, text=text, marker=dict(color=color, size=9),
                                        **axes))
    titles = [_label(m, objectives[m]) for m in names]
    if len(names) >= 3:
        figure.update_layout(scene=dict(xaxis_title=titles[0], yaxis_title=titles[1], zaxis_title=titles[2]))
    else:
        figure.update_layout(xaxis_title=titles[0], yaxis_title=titles[-1])
    figure.update_layout(title=f"Pareto front: {int((table['pareto_rank'] == 0).sum())} of {len(table)} "
                               "finished trials", height=700)
    return figure.to_html(include_plotlyjs=True if plotlyjs == "inline" else "cdn", full_html=True)


def save(figure: Any, path: str | Path | IO[bytes]) -> None:
    """Write a matplotlib figure as PNG, to a path or a binary file object."""
    figure.savefig(path, dpi=110, format="png")
