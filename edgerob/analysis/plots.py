"""Pictures where a picture answers faster than a table: latency and throughput against batch
size (one panel per target, own and published rows marked apart), energy per inference against
latency per power mode, the adversarial-vs-clean ratio per cell as a forest plot, and predicted
against true values with intervals.

Readable in greyscale: precision is a marker shape, provenance a line style and fill, never a
colour alone; every axis names its unit. Each figure function returns None where the rows hold
nothing to draw. Host side only (matplotlib, imported lazily through `compare._new_figure`).
"""

from __future__ import annotations

from pathlib import Path

from edgerob.analysis.compare import (MEASURED, _maybe_log, _new_figure, _num, figure_bytes,
                                      single_device_resnet50)
from edgerob.errors import EdgerobError
from edgerob.files import atomic_write_bytes

MARKERS = {"fp32": "o", "fp16": "s", "int8": "^"}
FORMATS = ("png", "svg", "pdf")


def _marker(precision) -> str:
    return MARKERS.get(precision, "D")


def _own(row: dict) -> bool:
    return row.get("source", MEASURED) == MEASURED


def fleet_batch_figure(rows: list[dict], per_row: int = 4):
    """p50 latency (upper) and throughput (lower panel) against batch size, one pair of panels
    per target (`per_row` targets a row): own rows one solid line per precision with filled
    markers, published single-device ResNet-50 rows with a batch size as hollow grey markers
    (one MLPerf round and scenario each: points, not a series)."""
    usable = [r for r in rows if r.get("batch_size") and single_device_resnet50(r)
              and (_num(r.get("latency_p50_ms")) or _num(r.get("throughput_sps")))]
    if not usable:
        return None
    targets = list(dict.fromkeys(r["target"] for r in usable))  # own first: fleet order
    ncols = min(per_row, len(targets))
    nrows = -(-len(targets) // ncols)
    fig = _new_figure(max(4.0, 3.6 * ncols), 5.4 * nrows)
    axes = fig.subplots(2 * nrows, ncols, squeeze=False)
    for ax in axes.flat[len(targets) * 0:]:
        ax.set_visible(False)
    metrics = (("latency_p50_ms", "p50 latency per batch (ms)"),
               ("throughput_sps", "throughput (samples/s)"))
    for j, target in enumerate(targets):
        mine = [r for r in usable if r["target"] == target]
        for k, (key, label) in enumerate(metrics):
            ax = axes[2 * (j // ncols) + k][j % ncols]
            ax.set_visible(True)
            for prec in sorted({r.get("precision") or "?" for r in mine}):
                own = sorted((r["batch_size"], r[key]) for r in mine if _own(r)
                             and (r.get("precision") or "?") == prec and _num(r.get(key)))
                ref = [(r["batch_size"], r[key]) for r in mine if not _own(r)
                       and (r.get("precision") or "?") == prec and _num(r.get(key))]
                if own:
                    ax.plot([p[0] for p in own], [p[1] for p in own], marker=_marker(prec),
                            ls="-", color="black", ms=6, lw=1.2, label=f"{prec} own")
                if ref:
                    ax.plot([p[0] for p in ref], [p[1] for p in ref], marker=_marker(prec),
                            ls="none", color="0.35", mfc="white", ms=7,
                            label=f"{prec} MLPerf (published)")
            ax.set_xscale("log", base=2)
            _maybe_log(ax, "y", [r.get(key) for r in mine])
            ax.grid(alpha=0.3)
            ax.set_xlabel("batch size (samples)")
            ax.set_ylabel(label, fontsize=8)
            if k == 0:
                ax.set_title(target, fontsize=10)
                ax.legend(fontsize=7)
    return fig


def power_mode_figure(rows: list[dict]):
    """Energy per inference against p50 latency, one marker shape and line per power mode (own
    rows that name one and have both values); None where no mode was measured with energy."""
    pts = [r for r in rows if _own(r) and r.get("power_mode")
           and _num(r.get("energy_per_inference_j")) and _num(r.get("latency_p50_ms"))]
    if not pts:
        return None
    fig = _new_figure(6.4, 4.4)
    ax = fig.add_subplot()
    shapes, styles = "osD^vP*X", ["-", "--", ":", "-."]
    for i, mode in enumerate(sorted({r["power_mode"] for r in pts})):
        sel = sorted((r for r in pts if r["power_mode"] == mode),
                     key=lambda r: r["latency_p50_ms"])
        ax.plot([r["latency_p50_ms"] for r in sel], [r["energy_per_inference_j"] for r in sel],
                marker=shapes[i % len(shapes)], ls=styles[i % len(styles)], color="black",
                mfc="white" if i % 2 else "black", label=str(mode))
        for r in sel:
            ax.annotate(f"{r['target']} {r['precision']} b{r['batch_size']}",
                        (r["latency_p50_ms"], r["energy_per_inference_j"]), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")
    _maybe_log(ax, "x", [r["latency_p50_ms"] for r in pts])
    _maybe_log(ax, "y", [r["energy_per_inference_j"] for r in pts])
    ax.set_xlabel("p50 latency per batch (ms)")
    ax.set_ylabel("energy per inference (J, net of idle)")
    ax.set_title("energy against latency per power mode", fontsize=10)
    ax.legend(title="power mode", fontsize=7)
    ax.grid(alpha=0.3)
    return fig


def ratio_forest_figure(rows: list[dict]):
    """Adversarial / clean ratio of p50 latency (and of energy per inference, where measured)
    per cell with its interval; a vertical line at 1 (no difference). Rows: measurements with
    `latency_vs_clean_*` (`Store.measurements`). None where no cell has a ratio."""
    cells = [r for r in rows if r.get("input_set") != "clean"
             and _num(r.get("latency_vs_clean_ratio"))]
    if not cells:
        return None
    fig = _new_figure(6.4, 1.2 + 0.32 * len(cells))
    ax = fig.add_subplot()
    ys = list(range(len(cells)))[::-1]
    for kind, marker, dy, fill in (("latency", "o", 0.12, "black"), ("energy", "s", -0.12,
                                                                      "white")):
        pts = [(y, r) for y, r in zip(ys, cells) if _num(r.get(f"{kind}_vs_clean_ratio"))]
        if not pts:
            continue
        x = [r[f"{kind}_vs_clean_ratio"] for _, r in pts]
        lo = [r.get(f"{kind}_vs_clean_low") for _, r in pts]
        hi = [r.get(f"{kind}_vs_clean_high") for _, r in pts]
        err = [[v - (l if _num(l) else v) for v, l in zip(x, lo)],
               [(h if _num(h) else v) - v for v, h in zip(x, hi)]]
        ax.errorbar(x, [y + dy for y, _ in pts], xerr=err, fmt=marker, color="black",
                    mfc=fill, capsize=3, lw=1, label=f"{'p50 latency' if kind == 'latency' else 'energy per inference'}")
    ax.axvline(1.0, color="0.3", ls="--", lw=1)
    ax.set_yticks(ys)
    ax.set_yticklabels([f"{r['target']} {r['precision']} b{r['batch_size']} {r['input_set']}"
                        for r in cells], fontsize=7)
    ax.set_xlabel("adversarial / clean (ratio, 95% interval; 1 = no difference)")
    ax.set_title("adversarial vs clean inputs per cell", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3, axis="x")
    return fig


def prediction_figure(rows: list[dict]):
    """Predicted against true (the target's own, or published) values with their intervals,
    log axes, one panel per metric, the line y = x. Rows: `edgerob.analysis.predict.predict`
    output; only those with a true value are drawn. None where none has one."""
    pts = [r for r in rows if _num(r.get("measured")) and _num(r.get("predicted"))
           and r["measured"] > 0 and r["predicted"] > 0]
    if not pts:
        return None
    metrics = list(dict.fromkeys(r["metric"] for r in pts))
    fig = _new_figure(max(4.4, 4.2 * len(metrics)), 4.2)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        sel = [r for r in pts if r["metric"] == metric]
        x = [r["measured"] for r in sel]
        y = [r["predicted"] for r in sel]
        lo = [r["interval"][0] if r.get("interval") else v for r, v in zip(sel, y)]
        hi = [r["interval"][1] if r.get("interval") else v for r, v in zip(sel, y)]
        ax.errorbar(x, y, yerr=[[max(v - l, 0) for v, l in zip(y, lo)],
                                [max(h - v, 0) for v, h in zip(y, hi)]],
                    fmt="o", color="black", mfc="white", capsize=3, lw=1,
                    label="prediction, interval")
        span = [min(x + [v for v in lo if v > 0]), max(x + hi)]
        ax.plot(span, span, color="0.4", ls="--", lw=1, label="predicted = true")
        ax.set_xscale("log")
        ax.set_yscale("log")
        unit = _UNITS.get(metric, "")
        ax.set_xlabel(f"true {metric} ({unit})")
        ax.set_ylabel(f"predicted {metric} ({unit})")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    return fig


_UNITS = {"throughput_sps": "samples/s", "latency_p90_ms": "ms", "latency_p99_ms": "ms",
          "energy_per_inference_j": "J"}


def save_plot(fig, path: str | Path) -> Path:
    """Write `fig` to `path` atomically, in the format its suffix names (png, svg or pdf)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise EdgerobError(f"--plot {path}: the file must end in .{', .'.join(FORMATS)}")
    atomic_write_bytes(path, figure_bytes(fig, fmt))
    return path


def write_fleet_plots(rows: list[dict], path: str | Path) -> list[Path]:
    """Latency and throughput against batch size to `path`; energy against latency per power
    mode, where modes were measured, beside it as STEM_power_modes.SUFFIX."""
    path = Path(path)
    fig = fleet_batch_figure(rows)
    if fig is None:
        raise EdgerobError("nothing to plot: no row has a batch size and a latency or "
                           "throughput")
    paths = [save_plot(fig, path)]
    modes = power_mode_figure(rows)
    if modes is not None:
        paths.append(save_plot(modes, path.with_name(f"{path.stem}_power_modes{path.suffix}")))
    return paths


def write_ratio_plot(rows: list[dict], path: str | Path) -> Path:
    fig = ratio_forest_figure(rows)
    if fig is None:
        raise EdgerobError("nothing to plot: no adversarial input set has a ratio to clean")
    return save_plot(fig, path)


def write_prediction_plot(rows: list[dict], path: str | Path) -> Path:
    fig = prediction_figure(rows)
    if fig is None:
        raise EdgerobError("nothing to plot: no prediction has a true value (the target's own "
                           "or a published result) to set it against")
    return save_plot(fig, path)
