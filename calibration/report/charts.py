"""The report's charts: matplotlib figures (no pyplot, no global state) rendered as inline PNG ``data:`` URIs.

matplotlib is imported inside the functions: it is heavy, and only ``humwatch report`` needs it.
"""

from __future__ import annotations

import base64
import io
from datetime import UTC

import numpy as np

from anomaly.features import mel_centers
from calibration.report.data import QUANTILES, dur, timeline_series

_RC = {"font.size": 9, "axes.titlesize": 10, "axes.spines.top": False, "axes.spines.right": False}
DPI = 100


def _figure(w: float, h: float, layout: str | None = "constrained"):
    """A matplotlib Figure without pyplot (no global state, no GUI backend)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=DPI, layout=layout)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _plain_log(axis) -> None:
    """Tick labels like 0.5, 1, 2, 5, 10 on a log axis (not 10^0, 2×10^0)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


SCORE_LABEL = "anomaly score (dimensionless)"


def _legend_above(fig, ax, ncols: int) -> None:
    """The legend in a row above the axes (constrained layout makes room), where it cannot cover data."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside upper left", fontsize=7, ncols=ncols, frameon=False)


def _finish_time_chart(fig, ax, ylabel: str, legend_cols: int):
    """Finish a chart over UTC time (labels, date ticks, grid, legend above the axes)."""
    ax.set_ylabel(ylabel)
    ax.set_xlabel("time (UTC)")
    _date_axis(ax)
    ax.grid(alpha=0.25)
    _legend_above(fig, ax, legend_cols)
    return fig


def _date_axis(ax) -> None:
    import matplotlib.dates as mdates

    loc = mdates.AutoDateLocator(tz=UTC, minticks=4, maxticks=10)
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc, tz=UTC))


def _days(t: np.ndarray) -> np.ndarray:
    """Epoch seconds → matplotlib date numbers (days since 1970-01-01)."""
    return np.asarray(t, float) / 86400.0


def timeline_png(df, alarms, changes: list[tuple[float, str]], refused: list[tuple[float, str]],
                 uncertain: list[tuple[float, float, int]] = ()) -> str:
    import matplotlib as mpl

    with mpl.rc_context(_RC):
        return _png(timeline_figure(df, alarms, changes, refused, uncertain))


def timeline_figure(df, alarms, changes, refused, uncertain=()):
    """The score timeline; ``uncertain``: ``(start, end, patches)`` stretches whose times are uncertain (shaded)."""
    import matplotlib as mpl

    with mpl.rc_context(_RC):
        fig = _figure(12, 4.0)
        ax = fig.add_subplot()
        ser = timeline_series(df["t_utc"].to_numpy(), df["score"].to_numpy(), df["threshold"].to_numpy())
        x = _days(ser["t"])
        if ser["median"] is not None:
            ax.plot(x, ser["max"], color="#4a7fb5", lw=0.7, label=f"score (max per {dur(ser['bin_s'])} bin)")
            ax.plot(x, ser["median"], color="#1f3b57", lw=0.9, label="score (median per bin)")
        else:
            ax.plot(x, ser["max"], color="#4a7fb5", lw=0.7, label="score per patch")
        over = ser["max"] > ser["threshold"]
        ax.scatter(x[over], ser["max"][over], s=4, color="#d62728", zorder=3, label="over the threshold")
        ax.plot(x, ser["threshold"], color="#ff7f0e", lw=1.4, drawstyle="steps-post", label="threshold")
        lo, hi = float(np.nanmin(df["t_utc"])), float(np.nanmax(df["t_utc"]))
        first = True
        for t, cid in changes:
            ax.axvline(_days([t])[0], color="#2ca02c", lw=1.2, ls="--",
                       label="calibration change" if first else None)
            ax.annotate(cid[:15].replace("$", r"\$"), (_days([t])[0], 1.0), xycoords=("data", "axes fraction"),
                        rotation=90, fontsize=7, color="#2ca02c", ha="right", va="top")
            first = False
        first = True
        for t, _cid in refused:
            if lo <= t <= hi:
                ax.axvline(_days([t])[0], color="#999999", lw=1.0, ls=":",
                           label="recalibration refused" if first else None)
                first = False
        if len(alarms):
            ax.scatter(_days(alarms["t_utc"].to_numpy()), alarms["score"].to_numpy(), marker="v", s=46,
                       color="#b30000", edgecolor="white", lw=0.6, zorder=4, label="alarm")
        for i, (a, b, _n) in enumerate(uncertain):
            ax.axvspan(_days([a])[0], _days([b])[0], color="#999999", alpha=0.18, lw=0, hatch="//",
                       label="time uncertain (file modification time)" if i == 0 else None)
        top = float(np.nanmax(df["score"]))
        if top > 8 * float(np.nanmedian(df["threshold"])):
            ax.set_yscale("log")
            _plain_log(ax.yaxis)
        return _finish_time_chart(fig, ax, SCORE_LABEL, legend_cols=5)


def histogram_png(scores: np.ndarray, baseline: np.ndarray, thresholds: list[float]) -> str:
    import matplotlib as mpl

    with mpl.rc_context(_RC):
        fig = _figure(7, 3.4)
        ax = fig.add_subplot()
        allv = np.concatenate([scores, baseline]) if baseline.size else scores
        pos = allv[allv > 0]
        log_x = pos.size == allv.size and pos.size > 0 and pos.max() / pos.min() > 20
        bins = (np.geomspace(pos.min(), pos.max(), 80) if log_x else
                np.linspace(float(allv.min()), float(allv.max()) + 1e-12, 80))
        if baseline.size:
            ax.hist(baseline, bins=bins, density=True, histtype="stepfilled", alpha=0.35, color="#2ca02c",
                    label=f"calibration baseline ({baseline.size} patches)")
        ax.hist(scores, bins=bins, density=True, histtype="step", lw=1.4, color="#1f77b4",
                label=f"this period ({scores.size} patches)")
        for i, th in enumerate(sorted(set(round(x, 9) for x in thresholds))):
            ax.axvline(th, color="#ff7f0e", lw=1.3, label="threshold" if i == 0 else None)
        if log_x:
            ax.set_xscale("log")
            _plain_log(ax.xaxis)
        ax.set_yscale("log")
        ax.set_xlabel(SCORE_LABEL)
        ax.set_ylabel("density (share of patches per unit score)")
        _legend_above(fig, ax, 3)
        ax.grid(alpha=0.25)
        return _png(fig)


def drift_png(rows, label: str) -> str:
    import matplotlib as mpl

    with mpl.rc_context(_RC):
        return _png(drift_figure(rows, label))


def drift_figure(rows, label: str):
    import matplotlib as mpl

    colors = {0.5: "#1f77b4", 0.9: "#9467bd", 0.99: "#d62728"}
    with mpl.rc_context(_RC):
        fig = _figure(12, 3.4)
        ax = fig.add_subplot()
        x = _days(np.array([t.timestamp() for t in rows.index]))
        width = np.diff(x).min() if x.size > 1 else {"week": 7, "day": 1, "hour": 1 / 24}.get(label, 1 / 144)
        xc = x + width / 2
        for p in QUANTILES:
            n = round(p * 100)
            ax.plot(xc, rows[f"q{n}"], marker="o", ms=4, color=colors[p], label=f"{n} % of this {label}")
            ax.hlines(rows[f"base_q{n}"], x, x + width, colors=colors[p], linestyles="--", lw=1.1,
                      label=f"{n} % baseline")
        ax.set_yscale("log")
        _plain_log(ax.yaxis)
        ax.set_ylabel("score quantile (dimensionless)")
        ax.set_xlabel(f"{label} (UTC)")
        ax.set_xlim(x[0] - 0.02 * width, x[-1] + 1.02 * width)
        _date_axis(ax)
        ax.grid(alpha=0.25)
        _legend_above(fig, ax, 6)
        return fig


def _band_ticks(ax, params, axis: str = "y") -> None:
    c = mel_centers(params)
    want = [f for f in (125, 250, 500, 1000, 2000, 4000, 7000) if c[0] * 0.9 <= f <= c[-1] * 1.05]
    pos = [int(np.argmin(np.abs(c - f))) for f in want]
    labels = [f"{f // 1000}k" if f >= 1000 else str(f) for f in want]
    (ax.set_yticks if axis == "y" else ax.set_xticks)(pos, labels)


def patch_png(x: np.ndarray | None, recon: np.ndarray | None, err: np.ndarray | None, bands: np.ndarray | None,
              baseline: np.ndarray | None, params, top: list[dict]) -> str:
    import matplotlib as mpl

    with mpl.rc_context(_RC):
        return _png(patch_figure(x, recon, err, bands, baseline, params, top))


def patch_figure(x, recon, err, bands, baseline, params, top: list[dict]):
    """Input log-mel, reconstruction and squared-error map (when the audio could be re-read) and the per-band
    error against the calibration's mean band error."""
    import matplotlib as mpl

    panels = []
    if x is not None:
        vmin, vmax = float(np.percentile(x, 1)), float(x.max())
        panels.append((x, "input log-mel", "magma", vmin, vmax, "ln(mel power)"))
        if recon is not None and err is not None:
            panels.append((recon, "reconstruction", "magma", vmin, vmax, "ln(mel power)"))
            panels.append((err, "squared error (normalised)", "viridis", 0.0, float(err.max()) or 1.0,
                           "(x − x̂)² / σ² (dimensionless)"))
    with mpl.rc_context(_RC):
        # A fixed layout: the constrained one takes ~4x longer to draw with six colorbars.
        fig = _figure(12 if panels else 7, 3.1, layout=None)
        gs = fig.add_gridspec(1, len(panels) + 1, width_ratios=[1] * len(panels) + [1.7],
                              left=0.05 if panels else 0.1, right=0.99, bottom=0.17, top=0.8, wspace=0.62)
        ext = [0, params.patch_seconds, -0.5, params.n_mels - 0.5]
        for j, (img, title, cmap, lo, hi, unit) in enumerate(panels):
            ax = fig.add_subplot(gs[0, j])
            im = ax.imshow(img.T, origin="lower", aspect="auto", cmap=cmap, vmin=lo, vmax=hi, extent=ext,
                           interpolation="nearest")
            ax.set_title(title)
            ax.set_xlabel("time (s)")
            _band_ticks(ax, params)
            if j == 0:
                ax.set_ylabel("mel band centre (Hz)")
            cb = fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02)
            cb.set_label(unit, fontsize=7)
        axb = fig.add_subplot(gs[0, len(panels)])
        if bands is not None and np.isfinite(bands).any():
            idx = np.arange(bands.size)
            hot = {d["band"] for d in top}
            axb.bar(idx, bands, width=0.9, color=["#d62728" if i in hot else "#7f9fbf" for i in idx],
                    label="this patch")
            if baseline is not None and baseline.size == bands.size:
                axb.step(idx, baseline, where="mid", color="#2ca02c", lw=1.3, label="calibration mean")
            axb.set_yscale("log")
            _plain_log(axb.yaxis)
            axb.set_title("per-band error vs calibration", pad=18)
            axb.set_xlabel("mel band centre (Hz)")
            axb.set_ylabel("mean squared error (normalised)")
            _band_ticks(axb, params, "x")
            axb.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=2, frameon=False,
                       borderaxespad=0.1)
        else:
            axb.text(0.5, 0.5, "no per-band errors: only autoencoder models give them", ha="center", va="center",
                     transform=axb.transAxes)
            axb.set_axis_off()
        return fig


def fault_png(df, cols: list[str], thresholds: dict[str, float]) -> str:
    import matplotlib as mpl

    with mpl.rc_context(_RC):
        fig = _figure(12, 3.0)
        ax = fig.add_subplot()
        colours = ["#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#1f77b4", "#ff7f0e"]
        t = df["t_utc"].to_numpy()
        for i, c in enumerate(cols):
            ok = df[c].notna().to_numpy()
            ser = timeline_series(t[ok], df[c].to_numpy(float)[ok], np.zeros(int(ok.sum())))
            colour = colours[i % len(colours)]
            ax.plot(_days(ser["t"]), ser["max"], lw=0.8, color=colour, label=c[2:])
            thr = thresholds.get(c[2:])
            if thr is not None:
                ax.axhline(thr, color=colour, lw=0.7, ls=":")
        ax.set_ylim(-0.02, 1.02)
        return _png(_finish_time_chart(fig, ax, "class probability (0–1)", legend_cols=6))
