"""`edgerob predict`: a target's performance on a workload from the store's other results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from edgerob.analysis.predict import predict as predict_cells
from edgerob.cli.common import StoreOpt, fmt, out, print_json, user_errors
from edgerob.store import DEFAULT_URL, Store

UNITS = {"throughput_sps": "samples/s", "latency_p90_ms": "ms", "latency_p99_ms": "ms",
         "energy_per_inference_j": "J"}


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
    store: StoreOpt = DEFAULT_URL,
):
    """Predict a target's performance on a workload from the other targets' results.

    The method (reference-device ratios, low-rank completion, spec sheets for a device with no
    results) is chosen by cross-validation on the store's own cells; the interval is calibrated
    on held-out cells. The target's own value, if stored, is shown beside it and never fitted."""
    rows = predict_cells(Store(store), target, mlperf=mlperf, scenario=scenario,
                         version=version, model=_model_name(model) if model else None,
                         precision=precision, batch_size=batch_size, level=level)
    if json_out:
        print_json(rows)
        return
    table = Table(title=f"{target}: predicted from the other devices' results ({level:.0%} "
                        f"intervals); 'measured' is its own result, never fitted")
    for col in ("workload", "configuration", "metric", "predicted", "interval", "measured",
                "method", "leaned on"):
        table.add_column(col, justify="right" if col in ("predicted", "interval", "measured")
                         else "left")
    for r in rows:
        unit = UNITS.get(r["metric"], "")
        iv = r["interval"]
        table.add_row(r["workload"], r["configuration"], r["metric"],
                      f"{fmt(r['predicted'], '.4g')} {unit}",
                      f"{iv[0]:.4g}-{iv[1]:.4g}" if iv else "—",
                      fmt(r["measured"], ".4g"), r["method"] or "—", _leaned_on(r["references"]))
    out.print(table)
    for why in dict.fromkeys(r["why"] for r in rows):
        out.print(f"method: {why}", highlight=False)
