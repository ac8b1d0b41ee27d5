"""The `edgerob` command: a thin Typer layer that parses, shows progress and calls the library.

One module per command group over a shared core (`common`: consoles, errors, option aliases;
`tables`: tables several commands print): `prepare` (train, export, attack), `measure` (profile,
bundle, ingest), `fleet` (fleet run, fleet status), `catalog` (targets, doctor), `results`
(results, compare, cost, report, fit), `predict`, `search` (arch-score, optimize). Modules a device lacks the libraries for (torch, pandas,
lifelines, optuna) are imported inside the commands that need them, so `edgerob profile
--bundle` runs on a device with numpy and the runtime only.

Errors a user can cause (`EdgerobError`) end with one line on stderr and exit code 2.
"""

from __future__ import annotations

from typing import Annotated

import typer

from edgerob import __version__
from edgerob.cli import catalog, fleet, measure, predict, prepare, results, search
from edgerob.cli.common import out

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Profile neural networks on edge and desktop hardware: latency, power, "
                       "robustness under attack, and what it all costs.")


def _print_version(value: bool) -> None:
    if value:
        out.print(f"edgerob {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="Print edgerob's version and exit.")] = False) -> None:
    pass


# Registered in the order `edgerob --help` lists them.
app.command()(prepare.train)
app.command("export")(prepare.export_cmd)
app.command()(measure.profile)
app.command("bundle")(measure.bundle_cmd)
app.command()(measure.ingest)
app.add_typer(fleet.fleet_app, name="fleet")
app.add_typer(catalog.targets_app, name="targets")
app.command()(results.results)
app.command()(prepare.attack)
app.command()(catalog.doctor)
app.command()(results.compare)
app.command()(results.cost)
app.command()(predict.predict)
app.command()(results.report)
app.command()(results.fit)
app.command("arch-score")(search.arch_score)
app.command()(search.optimize)


def main() -> None:
    app()

