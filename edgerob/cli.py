"""The `edgerob` command: a thin Typer layer that parses, shows progress and calls the library.

Errors a user can cause (`EdgerobError`) end with one line on stderr and exit code 2.
"""

from __future__ import annotations

import csv
import functools
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edgerob.errors import EdgerobError
from edgerob.store import DEFAULT_URL

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Profile neural networks on edge and desktop hardware: latency, power, "
                       "robustness under attack, and what it all costs.")
# Piped output (CI logs, `| tee`) gets a wide fixed width rather than rich's 80 columns.
out = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 140)

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


def _csv_list(value: str, kind=str) -> list:
    try:
        return [kind(v.strip()) for v in value.split(",") if v.strip()]
    except ValueError:
        raise EdgerobError(f"cannot read {value!r} as a comma-separated list") from None


def _epoch_progress(total: int) -> tuple[Progress, callable]:
    progress = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=err,
                        transient=True)
    task = progress.add_task("train", total=total, status="")

    def on_epoch(r):
        progress.update(task, completed=r.epoch,
                        status=f"loss {r.loss:.3f}  test acc {r.test_accuracy:.2%}")

    return progress, on_epoch


@app.command()
@user_errors
def train(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for model.pt + model.json.")],
    arch: Annotated[str, typer.Option(help="resnet8/14/20/32/56/110 or resnet18/34/50.")] = "resnet8",
    width: Annotated[Optional[int], typer.Option(help="Base width (default 16, or 64 for "
                                                       "resnet18/34/50).")] = None,
    dataset: Annotated[str, typer.Option(help="digits (embedded), mnist or cifar10.")] = "digits",
    data_root: Annotated[Optional[Path], typer.Option(help="Folder holding MNIST/CIFAR-10.")] = None,
    epochs: int = 15,
    batch_size: int = 64,
    lr: float = 0.05,
    seed: int = 0,
):
    """Train a ResNet with seeded SGD; prints and records test accuracy and train time."""
    from edgerob.train import TrainConfig, train as train_model

    config = TrainConfig(arch=arch, width=width, dataset=dataset,
                         data_root=str(data_root) if data_root else None, epochs=epochs,
                         batch_size=batch_size, lr=lr, seed=seed)
    config.validate()
    progress, on_epoch = _epoch_progress(epochs)
    with progress:
        _, card = train_model(config, out_dir, on_epoch=on_epoch)
    out.print(f"{card.name}: test accuracy {card.accuracy:.2%} after {card.epochs_run} epochs, "
              f"train time {card.train_time_s:.1f} s -> {out_dir}")


@app.command("export")
@user_errors
def export_cmd(
    model_dir: Annotated[Path, typer.Argument(help="Model folder (model.pt + model.json).")],
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="Artifact folder "
                                                     "(default MODEL_DIR/artifacts).")] = None,
    precisions: Annotated[str, typer.Option(help="Comma-separated.")] = "fp32,fp16,int8",
    calibration_samples: Annotated[int, typer.Option(min=1)] = 256,
    force: Annotated[bool, typer.Option(help="Rebuild artifacts that already exist.")] = False,
):
    """Export to ONNX at each precision with a parity report against fp32."""
    from edgerob.export import export

    arts = export(model_dir, out_dir, _csv_list(precisions),
                  calibration_samples=calibration_samples, reuse=not force)
    table = Table("precision", "file", "size KiB", "top-1 agreement", "max |logit err|",
                  "accuracy", "vs", "sha256", title="artifacts")
    for a in arts.values():
        p = a.parity
        table.add_row(a.precision, a.path, f"{a.size_bytes / 1024:.0f}",
                      f"{p['top1_agreement']:.2%}", f"{p['max_abs_logit_error']:.3g}",
                      f"{p['accuracy']:.2%}", p["reference"], a.sha256[:12])
    out.print(table)


BundleOpt = Annotated[Optional[Path], typer.Option(
    "--bundle", "-b", help="Run a bundle (on the device it was shipped to) instead of a target.")]


@app.command()
@user_errors
def profile(
    target: TargetOpt = "cpu",
    profile_name: ProfileOpt = "quick",
    model: ModelOpt = None,
    store: Annotated[Optional[str], typer.Option(
        "--store", help="Results database URL (default sqlite:///edgerob.db; with --bundle, "
                        "the bundle's results/edgerob.db).", envvar="EDGEROB_STORE")] = None,
    threads: ThreadsOpt = None,
    bundle: BundleOpt = None,
    new_run: Annotated[bool, typer.Option(help="Start a new run instead of resuming the last "
                                               "one for this target/profile/model.")] = False,
):
    """Measure a model on a target over a profile's sweep and store the results.

    A target whose host is ssh://user@host is profiled remotely: the bundle is copied there,
    run, and its results ingested here."""
    from edgerob.store import Store
    from edgerob.sweep import cells, load_profile, run_profile

    if bundle is not None:
        from edgerob.bundle import load_bundle, results_url

        tgt, prof, work = load_bundle(bundle)  # verifies every file first
        db = Store(store or results_url(bundle))
        model_or_work, store = work, store or results_url(bundle)
    else:
        from edgerob.targets import load_target

        tgt, prof = load_target(target), load_profile(profile_name)
        store = store or DEFAULT_URL
        db = Store(store)  # open early: a bad URL fails before any training
        model_or_work = model or _default_model()
    if not tgt.is_local and bundle is None:
        from edgerob.remote import profile_remote

        with err.status("remote profiling") as status:
            counts = profile_remote(tgt, prof, model_or_work, db, new_run=new_run,
                                    on_step=lambda s: status.update(f"{tgt.name}: {s}"))
        rows = [r for r in db.measurements(target=tgt.name)]
        _print_measurements(rows, f"{tgt.name} ({tgt.host}) / {prof.name}")
        err.print(f"ingested {counts['measurements']} measurements and {counts['failures']} "
                  f"failure records ({counts['skipped']} already stored) -> {store}")
        return
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=err)
    task = progress.add_task(f"profiling on {tgt.name}", total=len(cells(prof)))

    def on_cell(i, n, cell, m):
        progress.update(task, completed=i, description=(
            f"{cell.precision} b{cell.batch_size} {cell.input_set}"
            + (" query attack" if cell.kind == "failures" else "")
            + (" (stored)" if m is None else "")))

    with progress:
        result = run_profile(tgt, prof, model_or_work, db, new_run=new_run, threads=threads,
                             on_cell=on_cell)
    _print_measurements(result.rows, f"{tgt.name} / {prof.name}")
    _print_versus_clean(result.rows)
    _print_failures(result.failures)
    err.print(f"run {result.run_id}: {result.measured} cells measured, {result.skipped} already "
              f"stored{' (resumed)' if result.resumed else ''} -> {store}")
    if result.power_note:
        err.print(f"power and energy are empty: {result.power_note}")
    hot = [r for r in result.rows if r["throttled"]]
    if hot:
        err.print(f"[yellow]warning[/] {len(hot)} cells were measured while throttled "
                  f"(column `throttled`): {hot[0]['throttle_note']}")
    elif result.rows and all(r["throttled"] is None for r in result.rows):
        err.print(f"throttling unknown: {result.rows[0]['throttle_note']}")


def _default_model() -> Path:
    from edgerob.train import TrainConfig, default_model

    config = TrainConfig()
    progress, on_epoch = _epoch_progress(config.epochs)
    with progress:
        folder, trained = default_model(config, on_epoch=on_epoch)
    err.print(f"{'trained' if trained else 'reusing'} default model {folder}")
    return folder


@app.command("bundle")
@user_errors
def bundle_cmd(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Bundle folder to write.")],
    target: TargetOpt = "cpu",
    profile_name: ProfileOpt = "quick",
    model: ModelOpt = None,
):
    """Write a bundle for a device: artifacts, input sets, target, profile, hashed manifest."""
    from edgerob.bundle import write_bundle
    from edgerob.sweep import load_profile
    from edgerob.targets import load_target

    tgt, prof = load_target(target), load_profile(profile_name)
    folder = write_bundle(tgt, prof, model or _default_model(), out_dir)
    out.print(f"bundle for {tgt.name} / {prof.name} -> {folder}\n"
              f"on the device: edgerob profile --bundle {folder.name}; then here: "
              f"edgerob ingest {folder.name}")


@app.command()
@user_errors
def ingest(
    source: Annotated[Path, typer.Argument(help="A bundle folder with results, or a results "
                                                ".db file.")],
    store: StoreOpt = DEFAULT_URL,
):
    """Import a device's results into the store, skipping rows already there."""
    from edgerob.bundle import ingest as ingest_results
    from edgerob.store import Store

    counts = ingest_results(source, Store(store))
    out.print(f"ingested {counts['runs']} new runs, {counts['measurements']} measurements, "
              f"{counts['failures']} failure records; {counts['skipped']} rows already stored "
              f"-> {store}")


targets_app = typer.Typer(no_args_is_help=True, help="The device catalog (targets/*.yaml).")
app.add_typer(targets_app, name="targets")


@targets_app.command("list")
@user_errors
def targets_list():
    """Every target: runtime, profiler, peak TOPS, bandwidth, TDP and price."""
    from edgerob.catalog import list_names
    from edgerob.targets import load_target

    table = Table("name", "runtime", "profiler", "host", "int8 TOPS", "fp16 TOPS", "GB/s",
                  "TDP W", "USD", "USD/h", title="targets")
    for name in list_names("targets"):
        t = load_target(name)
        tops = t.specs.peak_tops
        table.add_row(t.name, t.runtime, t.profiler, t.host, _fmt(tops.get("int8"), "g"),
                      _fmt(tops.get("fp16"), "g"), _fmt(t.specs.memory_bandwidth_gbs, "g"),
                      _fmt(t.specs.tdp_w, "g"), _fmt(t.price.purchase_usd, ",.0f"),
                      _fmt(t.price.cloud_usd_per_h, ".2f"))
    out.print(table)


@targets_app.command("show")
@user_errors
def targets_show(name: Annotated[str, typer.Argument(help="Target name or YAML path.")]):
    """One target's file, with the sources of its figures."""
    from edgerob.catalog import find_yaml
    from edgerob.targets import load_target

    load_target(name)  # validate first
    out.print(find_yaml("targets", name).read_text(), highlight=False, markup=False)


@app.command()
@user_errors
def results(
    store: StoreOpt = DEFAULT_URL,
    run: Annotated[Optional[str], typer.Option(help="Only this run id.")] = None,
    target: Annotated[Optional[str], typer.Option(help="Only this target.")] = None,
    csv_out: Annotated[Optional[Path], typer.Option("--csv", help="Also write rows to CSV.")] = None,
):
    """Show stored measurements."""
    from edgerob.store import Store

    db = Store(store)
    rows = db.measurements(run_id=run, target=target)
    if not rows:
        raise EdgerobError(f"no measurements in {store}"
                           + (f" for run {run}" if run else "")
                           + (f" for target {target}" if target else ""))
    _print_measurements(rows, store)
    _print_versus_clean(rows)
    _print_failures([f for f in db.failures(run) if not target or f["target"] == target])
    if csv_out:
        cols = [c for c in rows[0] if c != "latencies_ms"]
        with open(csv_out, "w", newline="") as f:
            w = csv.DictWriter(f, cols, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
        err.print(f"wrote {len(rows)} rows to {csv_out}")


@app.command()
@user_errors
def attack(
    model_dir: Annotated[Path, typer.Argument(help="Model folder (model.pt + model.json).")],
    attacks: Annotated[str, typer.Option("--attack", "-a", help="Comma-separated: fgsm, pgd, "
                                          "cw, deepfool, square, autoattack.")] = "pgd",
    eps: Annotated[str, typer.Option(help="Comma-separated L-inf radii in [0, 1].")] = "0.1",
    precise: Annotated[bool, typer.Option(help="Add the compensations for gradient masking "
                                               "(Lee & Chandrakasan 2021).")] = False,
    official: Annotated[bool, typer.Option(help="AutoAttack at the official strength (100 "
                                                "steps, Square 5000 queries).")] = False,
    samples: Annotated[Optional[int], typer.Option(min=1, help="First N test images.")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for the .npz "
                                                     "input sets (default MODEL_DIR/inputs).")] = None,
    seed: int = 0,
):
    """Craft white-box input sets on the fp32 model; report clean and robust accuracy."""
    from edgerob.attacks import craft, input_set_name
    from edgerob.data import load_dataset
    from edgerob.models import load_checkpoint

    names, radii = _csv_list(attacks), _csv_list(eps, float)
    model, card = load_checkpoint(model_dir)
    data = load_dataset(card.dataset, card.dataset_root)
    n = min(samples or len(data.x_test), len(data.x_test))
    import numpy as np

    ids = np.arange(n, dtype=np.int64)
    folder = out_dir or Path(model_dir) / "inputs"
    table = Table("input set", "clean acc", "robust acc", "naive robust acc", "strength",
                  "crafting s", "file", title=f"{card.name}: white-box attacks on {n} images")
    for name in names:
        for e in radii:
            s = craft(model, data.x_test[:n], data.y_test[:n], ids, name, e, precise=precise,
                      official=official, seed=seed)
            path = folder / f"{input_set_name(name, e)}.npz"
            s.save(path)
            table.add_row(s.name, _fmt(s.clean_accuracy, ".2%"), _fmt(s.robust_accuracy, ".2%"),
                          _fmt(s.params.get("naive_robust_accuracy"), ".2%"), s.strength or "",
                          _fmt(s.crafting_time_s, ".2f"), str(path))
            for w in s.params.get("warnings", []):
                err.print(f"[yellow]warning[/] {s.name}: {w}", highlight=False)
    out.print(table)


@app.command()
@user_errors
def doctor():
    """What can run here: each runtime and profiler, available or not and why, and the target
    that fits this machine."""
    from edgerob.profilers import REGISTRY as PROFILERS, profiler_class
    from edgerob.runtimes import REGISTRY as RUNTIMES, runtime_class
    from edgerob.targets import machine_facts, matching_targets

    table = Table("kind", "name", "available", "why", title="edgerob doctor")
    for kind, names, get in (("runtime", RUNTIMES, runtime_class),
                             ("profiler", PROFILERS, profiler_class)):
        for name in names:
            try:
                ok, reason = get(name).available()
            except (EdgerobError, ImportError) as e:
                ok, reason = False, str(e)
            table.add_row(kind, name, "[green]yes[/]" if ok else "[red]no[/]", reason)
    out.print(table)
    facts = machine_facts()
    fits = matching_targets(facts)
    out.print(f"device model: {facts['device_model'] or '—'}; NVIDIA GPUs: "
              f"{', '.join(facts['gpu_names']) or '—'}")
    if fits:
        out.print(f"target for this machine: [bold]{fits[0].name}[/] "
                  f"(edgerob profile --target {fits[0].name})")


def _fmt(v, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def _print_measurements(rows: list[dict], title: str) -> None:
    table = Table(title=title)
    for col in ("target", "precision", "batch", "input set", "p50 ms", "p99 ms", "mean ms",
                "std ms", "samples/s", "accuracy", "power W", "J/inference", "iters"):
        table.add_column(col, justify="left" if col in ("target", "precision", "input set")
                         else "right", no_wrap=True)
    for r in rows:
        table.add_row(r["target"], r["precision"], str(r["batch_size"]), r["input_set"],
                      _fmt(r["latency_p50_ms"], ".3f"), _fmt(r["latency_p99_ms"], ".3f"),
                      _fmt(r["latency_mean_ms"], ".3f"), _fmt(r["latency_std_ms"], ".3f"),
                      _fmt(r["throughput_sps"], ",.0f"), _fmt(r["accuracy"], ".2%"),
                      _fmt(r["power_mean_w"], ".2f"), _fmt(r["energy_per_inference_j"], ".3g"),
                      str(r["iterations"]))
    out.print(table)




def _print_versus_clean(rows: list[dict]) -> None:
    adv = [r for r in rows if r["input_set"] != "clean"]
    if not adv:
        return
    table = Table("precision", "batch", "input set", "accuracy", "p50 vs clean",
                  "Mann-Whitney p", "Cliff's delta", "energy vs clean",
                  title="adversarial vs clean inputs (same precision and batch size)")
    for r in adv:
        table.add_row(r["precision"], str(r["batch_size"]), r["input_set"],
                      _fmt(r["accuracy"], ".2%"), _fmt(r["latency_vs_clean_ratio"], ".3f"),
                      _fmt(r["latency_vs_clean_p"], ".2g"),
                      _fmt(r["latency_vs_clean_cliffs_delta"], "+.2f"),
                      _fmt(r["energy_vs_clean_ratio"], ".3f"))
    out.print(table)


def _print_failures(records: list[dict]) -> None:
    if not records:
        return
    from edgerob.failures import km_median

    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["precision"], r["batch_size"], f"{r['attack']}@{r['eps']:g}"),
                          []).append(r)
    table = Table("precision", "batch", "attack", "samples", "failed", "censored",
                  "median queries", "median time s", "median energy J",
                  title="failure records (Kaplan-Meier medians; — where over half survive)")
    for (prec, bs, name), rs in groups.items():
        ev = [r["event"] for r in rs]
        energy = [r["energy_j"] for r in rs]
        table.add_row(prec, str(bs), name, str(len(rs)), str(sum(ev)), str(len(rs) - sum(ev)),
                      _fmt(km_median([r["queries"] for r in rs], ev), ".0f"),
                      _fmt(km_median([r["duration_s"] for r in rs], ev), ".3g"),
                      _fmt(km_median(energy, ev) if None not in energy else None, ".3g"))
    out.print(table)


@app.command()
@user_errors
def fit(
    store: StoreOpt = DEFAULT_URL,
    duration: Annotated[str, typer.Option(help="What to model: time (s) or energy (J) to "
                                               "failure.")] = "time",
    families: Annotated[str, typer.Option(help="Comma-separated AFT families: weibull, "
                                               "lognormal, loglogistic, exponential, "
                                               "gengamma.")] = "weibull,lognormal,loglogistic",
    covariates: Annotated[Optional[str], typer.Option(help=(
        "Comma-separated (default precision,target,attack,eps,log2_batch_size); also model, "
        "batch_size and the target specs tdp_w, memory_bandwidth_gbs, memory_gb, "
        "peak_tops."))] = None,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for the CSV tables and "
                                                              "plots.")] = Path("fit"),
    horizon: Annotated[Optional[float], typer.Option(help="Calibration horizon (default: the "
                                                          "median duration).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison and the best "
                                                         "family's coefficients as JSON only.")
                       ] = False,
):
    """Fit AFT survival models to the failure records: compare families, time ratios, plots,
    TRASH score."""
    import json

    from rich.markup import escape

    from edgerob import survival
    from edgerob.store import Store

    df = survival.load_failures(Store(store), duration)
    result = survival.fit_models(
        df, families=_csv_list(families),
        covariates=_csv_list(covariates) if covariates is not None else None, horizon=horizon)
    notes = list(result.notes)
    trash = None
    if result.duration == "time":
        try:
            train_times = survival.cached_train_times(result.data)
        except ImportError as e:  # no torch here: no model cache to read
            train_times = {}
            notes.append(f"TRASH score skipped: cannot read the model cache ({e})")
        if train_times:
            trash = result.trash(train_times)
        elif not any(n.startswith("TRASH") for n in notes):
            notes.append("TRASH score skipped: no cached model card with a train time matches "
                         "these records' models (pass train_time_s to FitResult.trash)")
    paths = result.write(out_dir, trash)
    if as_json:
        typer.echo(json.dumps(result.to_json()))
    else:
        unit = result.unit
        table = Table("family", "n", "events", "k", "log-lik", "AIC", "BIC", "C train",
                      "C test", "ICI", "E50", title=f"AFT models of {result.duration} to failure "
                      f"({unit}); * best by AIC; calibration at {result.horizon:.4g} {unit}")
        for f in result.models.values():
            table.add_row(f"{f.family}{' *' if f.family == result.best else ''}", str(f.n),
                          str(f.events), str(f.k), _fmt(f.log_likelihood, ".1f"),
                          _fmt(f.aic, ".1f"), _fmt(f.bic, ".1f"),
                          _fmt(f.concordance_train, ".3f"), _fmt(f.concordance_test, ".3f"),
                          _fmt(f.ici, ".4f"), _fmt(f.e50, ".4f"),
                          style="bold" if f.family == result.best else None)
        out.print(table)
        table = Table("covariate", "time ratio", "95% CI", "p",
                      title=f"{result.best}: time ratios exp(coef) on all {result.final.n} "
                            f"records (below 1: fails sooner than the reference)")
        for c, r in result.coefficients.iterrows():
            table.add_row(escape(c), f"{r.time_ratio:.3f}", f"{r.ci_low:.3f} – {r.ci_high:.3f}",
                          f"{r.p:.2g}" if r.p > 0 else "<1e-300")
        refs = [f"{c} {t['reference']}" for c, t in result.design.terms.items()
                if t["kind"] == "categorical"]
        out.print(table)
        if refs:
            out.print(f"reference: {', '.join(refs)}", markup=False, highlight=False)
        if trash is not None and len(trash):
            table = Table("model", "target", "train s", "E[T] s", "TRASH", "",
                          title="TRASH score: train time / expected time to failure")
            for r in trash.itertuples():
                table.add_row(escape(r.model), escape(r.target), f"{r.train_time_s:.4g}",
                              f"{r.expected_time_s:.4g}", f"{r.trash:.4g}",
                              "[red]cheaper to break than to build[/]"
                              if r.cheaper_to_break else "")
            out.print(table)
    for n in notes:
        err.print(f"note: {n}", highlight=False, markup=False)
    err.print(f"wrote {len(paths)} files to {out_dir}")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
