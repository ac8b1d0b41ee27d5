"""What every command shares: the consoles, the error wrapper, option aliases and formatting."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from edgerob.errors import EdgerobError


def _width(stream) -> int | None:
    """A terminal's own width; piped output (CI logs, `| tee`) gets COLUMNS where set, else a
    wide fixed width rather than rich's 80 columns."""
    if stream.isatty():
        return None
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else 140


out = Console(width=_width(sys.stdout))
err = Console(stderr=True, width=_width(sys.stderr))

# Shared option aliases (as the hf CLI does): one definition, used by every command.
StoreOpt = Annotated[str, typer.Option("--store", help="Results database URL (SQLAlchemy).",
                                       envvar="EDGEROB_STORE")]
TargetOpt = Annotated[str, typer.Option("--target", "-t",
                                        help="Target name (targets/NAME.yaml) or YAML path.")]
ProfileOpt = Annotated[str, typer.Option("--profile", "-p",
                                         help="Profile name (profiles/NAME.yaml) or YAML path.")]
ModelOpt = Annotated[Optional[Path], typer.Option(
    "--model", "-m", help="Model folder (model.pt + model.json). Default: the cached default "
                          "model, trained on first use.")]
ThreadsOpt = Annotated[Optional[int], typer.Option(
    "--threads", min=1, help="Runtime intra-op threads (default: the target's setting).")]


def user_errors(fn):
    """One clear line and exit code 2 for errors the user can fix; 130 on Ctrl-C."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EdgerobError as e:
            err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted: whole cells already measured are kept; run the same "
                      "command again to resume")
            raise typer.Exit(130) from None

    return wrapper


def csv_list(value: str, kind=str) -> list:
    try:
        return [kind(v.strip()) for v in value.split(",") if v.strip()]
    except ValueError:
        raise EdgerobError(f"cannot read {value!r} as a comma-separated list") from None


PublishedOpt = Annotated[str, typer.Option(
    "--published", help="Published (MLPerf) rows after your own: none, latest (the newest per "
                        "device, benchmark, scenario and configuration; plain before "
                        "Triton/MIG) or all.")]
AllPublishedOpt = Annotated[bool, typer.Option(
    "--all-published", help="Same as --published all.")]
WideOpt = Annotated[bool, typer.Option(
    "--wide", help="Every column (default: the columns that answer the question, readable "
                   "at 100 columns).")]


def published_choice(published: str, all_published: bool) -> str:
    return "all" if all_published else published


def fmt(v, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def print_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


def epoch_progress(total: int) -> tuple[Progress, callable]:
    progress = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=err,
                        transient=True)
    task = progress.add_task("train", total=total, status="")

    def on_epoch(r):
        progress.update(task, completed=r.epoch,
                        status=f"loss {r.loss:.3f}  test acc {r.test_accuracy:.2%}")

    return progress, on_epoch


def prepare_workload(profile, model: Path | None):
    """The host's half of the pipeline: the workload (artifacts, input sets) of a model folder
    (None: the default model, trained on first use), with a status line."""
    from edgerob.host.workload import prepare_workload as prepare  # torch: not on devices

    folder = model or _default_model()
    with err.status("preparing the workload (export, input sets)"):
        return prepare(profile, folder)


def _default_model() -> Path:
    from edgerob.host.train import TrainConfig, default_model  # torch: not on devices

    config = TrainConfig()
    progress, on_epoch = epoch_progress(config.epochs)
    with progress:
        folder, trained = default_model(config, on_epoch=on_epoch)
    err.print(f"{'trained' if trained else 'reusing'} default model {folder}")
    return folder
