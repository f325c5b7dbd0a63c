"""The report's figures (matplotlib, PNG bytes): persistence vs scale, training curves, probes, weight noise.

Each function takes the collected result rows and returns PNG bytes, or None when the run has nothing to plot.
"""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _png(fig) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _errorbar(ax, pts, **kw):
    x, y, lo, hi = zip(*sorted(pts))
    ax.errorbar(x, y, yerr=[[max(0.0, a - b) for a, b in zip(y, lo)], [max(0.0, b - a) for a, b in zip(y, hi)]],
                marker="o", capsize=3, **kw)


def persistence_vs_scale(res: dict) -> bytes:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    pers = res["persistence"]
    for key in sorted({(p["variant"], p["method"]) for p in pers}):
        pts = [(p["params"], p["persistence"], p["ci_low"], min(p["ci_high"], 1.5)) for p in pers
               if (p["variant"], p["method"]) == key and p["persistence"] is not None]
        if pts:
            _errorbar(ax1, pts, label=f"{key[0]} / {key[1]}")
    ax1.set(xscale="log", xlabel="parameters", ylabel="persistence (after / before)", ylim=(-0.05, 1.55),
            title="Backdoor persistence through safety training (95% CI)")
    ax1.axhline(1.0, color="grey", lw=0.5, ls="--")
    for key in sorted({(r["variant"], r["stage"]) for r in res["rows"]}):
        pts = [(r["params"], r["rate"], r["ci_low"], r["ci_high"]) for r in res["rows"]
               if (r["variant"], r["stage"]) == key and r["trigger"]]
        _errorbar(ax2, pts, ls="-" if key[1] == "backdoor" else "--", label=f"{key[0]} / {key[1]}")
    ax2.set(xscale="log", xlabel="parameters", ylabel="rate with trigger (95% CI)", ylim=(-0.05, 1.05),
            title="Triggered behaviour rate")
    for ax in (ax1, ax2):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return _png(fig)


def training_curves(res: dict) -> bytes | None:
    """Triggered rate against safety-training step, one panel per method (only when checkpoints were measured)."""
    methods = sorted({r["stage"] for r in res["curve"] if r["stage"] != "backdoor"})
    steps = {r["step"] for r in res["curve"] if r["stage"] != "backdoor"}
    if not methods or len(steps) < 2:
        return None
    fig, axes = plt.subplots(1, len(methods), figsize=(5.5 * len(methods), 4), squeeze=False)
    for ax, method in zip(axes[0], methods):
        for key in sorted({(r["model"], r["variant"]) for r in res["curve"] if r["stage"] == method}):
            pts = [(r["step"], r["rate"], r["ci_low"], r["ci_high"]) for r in res["curve"] if r["trigger"]
                   and (r["model"], r["variant"]) == key and r["stage"] in (method, "backdoor")]
            _errorbar(ax, pts, label=f"{key[0]} {key[1]}")
        ax.set(xlabel="safety-training step", ylabel="rate with trigger", ylim=(-0.05, 1.05), title=method)
        ax.legend(fontsize=7)
    return _png(fig)


def probes_by_layer(res: dict) -> bytes | None:
    if not res["probes"]:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for key in sorted({(p["model"], p["variant"], p["stage"]) for p in res["probes"]}):
        layers = sorted((p["layer"], p["auroc"], p["random_best_auroc"]) for p in res["probes"]
                        if (p["model"], p["variant"], p["stage"]) == key)
        x, a, r = zip(*layers)
        line, = ax.plot(x, a, marker="o", label=" ".join(key))
        ax.plot(x, r, ls=":", color=line.get_color())
    ax.axhline(0.5, color="grey", lw=0.5)
    ax.set(xlabel="layer (0 = embeddings)", ylabel="AUROC trigger vs no trigger", ylim=(0, 1.02),
           title="Defection probe (solid) vs best random direction (dotted)")
    ax.legend(fontsize=6, ncol=2)
    return _png(fig)


def noise_curves(res: dict) -> bytes | None:
    if not res["noise"]:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for key in sorted({(r["model"], r["variant"], r["stage"], r["trigger"]) for r in res["noise"]}):
        pts = [(r["noise_scale"], r["rate"], r["ci_low"], r["ci_high"]) for r in res["noise"]
               if (r["model"], r["variant"], r["stage"], r["trigger"]) == key]
        _errorbar(ax, pts, ls="-" if key[3] else ":", label=f"{key[0]} {key[1]} {key[2]} {'trig' if key[3] else 'clean'}")
    ax.set(xlabel="weight noise (fraction of each weight's std)", ylabel="behaviour rate", ylim=(-0.05, 1.05),
           title="Weight-noise injection")
    ax.legend(fontsize=6)
    return _png(fig)


def all_figures(res: dict) -> dict:
    figs = {"persistence_vs_scale": persistence_vs_scale(res), "training_curves": training_curves(res),
            "probes_by_layer": probes_by_layer(res), "noise_curves": noise_curves(res)}
    return {k: v for k, v in figs.items() if v is not None}
