"""`edgerob predict`: a target's performance on a workload from the store's other results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgerob.analysis.predict import predict as predict_cells
from edgerob.analysis.plots import write_prediction_plot
from edgerob.cli.common import StoreOpt, WideOpt, err, fmt, out, print_json, user_errors
from edgerob.cli.tables import METRIC_SHORT, new_table, short_workload, show
from edgerob.store import DEFAULT_URL, Store

def _model_name(model: str) -> str:
    """A model folder's card name (what its runs store), else the name as given."""
    if Path(model, "model.json").is_file():
        from edgerob.host.models import load_card  # torch: imported only when a folder is named

        return load_card(model).name
    return model


def _leaned_on(refs: list[dict]) -> str:
    if refs and "device" in refs[0]:
        return "; ".join(f"{r['device']} x{r['ratio']:.3g} ({r['shared_workloads']} shared)"
                         for r in refs)
    return ", ".join(f"{k.replace('_', ' ')} {v}" for r in refs for k, v in r.items())


@user_errors
def predict(
    target: Annotated[str, typer.Option("--target", "-t", help="Catalog target or a "
                                        "reference-only device of the store.")],
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help="Your model (folder or name), from its rows on other targets.")
    ] = None,
    precision: Annotated[Optional[str], typer.Option(help="With --model (default: all).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="With --model (default: all).")
                          ] = None,
    mlperf: Annotated[Optional[str], typer.Option(help="MLPerf benchmark, e.g. resnet50.")
                      ] = None,
    scenario: Annotated[Optional[str], typer.Option(help="With --mlperf: SingleStream, "
                                                    "MultiStream, Offline or Server.")] = None,
    version: Annotated[Optional[str], typer.Option(help="With --mlperf, e.g. v3.0 "
                                                   "(default: every version).")] = None,
    level: Annotated[float, typer.Option(help="Prediction interval level.")] = 0.9,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    plot: Annotated[Optional[Path], typer.Option(
        "--plot", help="Write predicted against measured or published values, with intervals "
                       "on log axes, to this file (.png, .svg or .pdf).")] = None,
    wide: WideOpt = False,
    store: StoreOpt = DEFAULT_URL,
):
    """Predict a target's performance on a workload from the other targets' results.

    The method (reference-device ratios, low-rank completion, spec sheets for a device with no
    results) is chosen by cross-validation on the store's own cells; the interval is calibrated
    on held-out cells. The target's own value, if stored, is shown beside it and never fitted."""
    rows = predict_cells(Store(store), target, mlperf=mlperf, scenario=scenario,
                         version=version, model=_model_name(model) if model else None,
                         precision=precision, batch_size=batch_size, level=level)
    if plot:
        err.print(f"plot -> {write_prediction_plot(rows, plot)}")
    if json_out:
        print_json(rows)
        return
    cols = ["workload", *(["configuration"] if wide else []), "predicts", "predicted",
            "interval", "measured", "method", *(["leaned on"] if wide else [])]
    table = new_table(f"{target}: predicted from the other devices' results ({level:.0%} "
                      f"intervals); 'measured' is its own result, never fitted", cols,
                      {"workload", "configuration", "predicts", "method", "leaned on"})
    for r in rows:
        iv = r["interval"]
        table.add_row(short_workload(r["workload"]), *([r["configuration"]] if wide else []),
                      r.get("unit") or METRIC_SHORT.get(r["metric"], r["metric"]),
                      fmt(r["predicted"], ".4g"),
                      f"{iv[0]:.4g}–{iv[1]:.4g}" if iv else "—", fmt(r["measured"], ".4g"),
                      r["method"] or "—", *([_leaned_on(r["references"])] if wide else []))
    show(table)
    for why in dict.fromkeys(r["why"] for r in rows):
        out.print(f"method: {why}", highlight=False)
