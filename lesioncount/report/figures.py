"""Plots for the report (matplotlib, Agg), as PNG bytes ready to embed.

Colour-blind safe and readable in black and white: the Okabe-Ito palette, and each
group also differs by line style and marker, so a greyscale print still separates them.
"""
from __future__ import annotations

import base64
import io
import math

import numpy as np
import pandas as pd

# Okabe & Ito (2008), "Color Universal Design": distinguishable with every common
# colour-vision deficiency.
OKABE_ITO = {"orange": "#E69F00", "sky": "#56B4E9", "green": "#009E73", "yellow": "#F0E442",
             "blue": "#0072B2", "vermillion": "#D55E00", "purple": "#CC79A7", "black": "#000000"}
GROUP_STYLES = [  # (colour, line style, marker): the treatment arm first, then the control
    (OKABE_ITO["blue"], "-", "o"),
    (OKABE_ITO["vermillion"], "--", "s"),
    (OKABE_ITO["green"], ":", "^"),
    (OKABE_ITO["purple"], "-.", "D"),
]
DPI = 150  # sharp on screen and in print at the sizes used (about 6-7 inches wide)


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for an <img src>."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.spines.top": False, "axes.spines.right": False,
                         "axes.grid": True, "grid.color": "#dddddd", "grid.linewidth": 0.6,
                         "legend.frameon": False, "savefig.facecolor": "white"})
    return plt


def _png(fig) -> bytes:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def group_styles(groups: list[str]) -> dict[str, tuple[str, str, str]]:
    """Colour, line style and marker for each group, in the given order."""
    return {g: GROUP_STYLES[n % len(GROUP_STYLES)] for n, g in enumerate(groups)}


def endpoint_figure(lines: pd.DataFrame, curves: pd.DataFrame, groups: list[str]) -> bytes:
    """Cumulative new Gd+ lesions by visit: each patient's line (thin) and each group's mean
    with its 95% interval (thick line and band).

    ``lines`` and ``curves`` come from :func:`lesioncount.report.stats.patient_lines` and
    :func:`~lesioncount.report.stats.endpoint_curves`; ``groups`` orders the legend.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    styles = group_styles(groups)
    rng = np.random.default_rng(0)
    offsets = np.linspace(-0.12, 0.12, max(len(groups), 1))
    for n, g in enumerate(groups):
        col, ls, mk = styles[g]
        sub = lines[lines["group"] == g]
        for _, df in sub.groupby("subject"):
            # a small horizontal offset per group and jitter per patient: identical lines
            # (many patients have 0 throughout) stay visible as a bundle
            x = df["visit"].to_numpy(float) + offsets[n] + rng.uniform(-0.03, 0.03)
            ax.plot(x, df["cumulative_new_gd"], color=col, ls=ls, lw=0.8, alpha=0.35, zorder=1)
        cur = curves[curves["group"] == g].sort_values("visit")
        if cur.empty:
            continue
        x = cur["visit"].to_numpy(float) + offsets[n]
        ax.fill_between(x, cur["low"], cur["high"], color=col, alpha=0.15, lw=0, zorder=2)
        ax.plot(x, cur["mean"], color=col, ls=ls, marker=mk, lw=2.4, ms=6, zorder=3,
                label=f"{g or 'all patients'} (n={int(cur['n'].iloc[0])}): mean, 95% interval")
    visits = sorted(set(curves["visit"])) if len(curves) else []
    labels = [curves.loc[curves["visit"] == v, "label"].iloc[0] for v in visits]
    ax.set_xticks(visits)
    ax.set_xticklabels([str(lab).replace("ses-", "") for lab in labels])
    ax.set_xlabel("visit")
    ax.set_ylabel("cumulative new Gd+ lesions")
    top = np.nanmax(lines["cumulative_new_gd"].to_numpy(float)) if len(lines) else 1
    ax.set_ylim(-0.3, max(2.0, (top if math.isfinite(top) else 1) * 1.08 + 0.3))
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend(loc="upper left")
    ax.set_title("Cumulative new Gd+ lesions since baseline (thin lines: each patient)",
                 fontsize=10, loc="left")
    return _png(fig)


def timeline_figure(visits: list[str], gd: list[float], new: list[float],
                    cumulative: list[float], flagged: list[bool] | None = None) -> bytes:
    """One patient's visits: Gd+ and new Gd+ counts (bars) and the cumulative new count (line).

    Visits flagged for registration (or not counted) are marked with a shaded band.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 2.3))
    x = np.arange(len(visits))
    w = 0.38
    gd_a = np.array([np.nan if v is None else v for v in gd], float)
    new_a = np.array([np.nan if v is None else v for v in new], float)
    cum_a = np.array([np.nan if v is None else v for v in cumulative], float)
    ax.bar(x - w / 2, gd_a, w, color=OKABE_ITO["sky"], edgecolor="black", lw=0.6, label="Gd+")
    ax.bar(x + w / 2, new_a, w, color=OKABE_ITO["orange"], edgecolor="black", lw=0.6,
           hatch="//", label="new Gd+")
    ax.plot(x, cum_a, color=OKABE_ITO["black"], marker="o", lw=1.6, ms=4,
            label="cumulative new")
    for i, f in enumerate(flagged or []):
        if f:
            ax.axvspan(i - 0.5, i + 0.5, color=OKABE_ITO["vermillion"], alpha=0.12, lw=0)
            ax.text(i, 0.02, "flagged", ha="center", va="bottom", fontsize=7,
                    color=OKABE_ITO["vermillion"], transform=ax.get_xaxis_transform())
    ax.set_xticks(x)
    ax.set_xticklabels([v.replace("ses-", "") for v in visits], fontsize=8)
    top = np.nanmax(np.concatenate([gd_a, new_a, cum_a, [1.0]]))
    ax.set_ylim(0, top * 1.15 + 0.5)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("lesions")
    ax.legend(loc="upper left", fontsize=8, ncol=3)
    return _png(fig)
