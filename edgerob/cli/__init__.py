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

from edgerob import __version__
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


def _print_version(value: bool) -> None:
    if value:
        out.print(f"edgerob {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="Print edgerob's version and exit.")] = False) -> None:
    pass


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
    adversarial: Annotated[Optional[str], typer.Option(
        help="Adversarial training: pgd or fgsm-rs (FGSM with random start).")] = None,
    eps: Annotated[float, typer.Option(help="L-inf radius in [0, 1] for adversarial training "
                                            "and the recorded robust accuracy.")] = 0.1,
    steps: Annotated[int, typer.Option(help="PGD steps in adversarial training.")] = 7,
    alpha: Annotated[Optional[float], typer.Option(help="Attack step size (default 2.5*eps/"
                                                        "steps for pgd, 1.25*eps for "
                                                        "fgsm-rs).")] = None,
    lr_schedule: Annotated[str, typer.Option(help="cosine, constant, step, onecycle or "
                                                  "accelat.")] = "cosine",
    accelat_k: Annotated[int, typer.Option(help="AccelAT: epochs in the accuracy mean.")] = 5,
    accelat_patience: Annotated[int, typer.Option(help="AccelAT: epochs between cuts.")] = 5,
    accelat_threshold: Annotated[float, typer.Option(help="AccelAT: cut when the mean rose "
                                                          "by less.")] = 0.005,
    accelat_factor: Annotated[float, typer.Option(help="AccelAT: lr multiplier at a cut.")] = 0.8,
    lr_floor: Annotated[float, typer.Option(help="AccelAT: lowest lr.")] = 1e-6,
    val_fraction: Annotated[Optional[float], typer.Option(help="Training images held out for "
                                                               "validation (default 0.1 with "
                                                               "accelat, else 0).")] = None,
    step_size: Annotated[Optional[int], typer.Option(help="step schedule: epochs between "
                                                          "decays (default epochs/3).")] = None,
    gamma: Annotated[float, typer.Option(help="step schedule: lr factor per decay.")] = 0.1,
    train_noise: Annotated[float, typer.Option(help="Gaussian sigma on training inputs.")] = 0.0,
    output_noise: Annotated[float, typer.Option(help="Gaussian sigma on the logits at "
                                                     "inference (seeded; exported).")] = 0.0,
    output_noise_seed: Annotated[Optional[int], typer.Option(help="Seed of the output noise "
                                                                  "(default --seed).")] = None,
    squeeze_bits: Annotated[Optional[int], typer.Option(help="Feature squeezing of inputs to "
                                                             "this bit depth (exported).")] = None,
    precision: Annotated[str, typer.Option(help="fp32, fp16, bf16 (CPU autocast) or fp64.")
                         ] = "fp32",
    energy_profiler: Annotated[Optional[str], typer.Option(help="Profiler for training energy "
                                                                "(e.g. rapl, nvml).")] = None,
):
    """Train a ResNet with seeded SGD; prints and records test accuracy and train time."""
    from edgerob.host.train import TrainConfig, train as train_model

    config = TrainConfig(arch=arch, width=width, dataset=dataset,
                         data_root=str(data_root) if data_root else None, epochs=epochs,
                         batch_size=batch_size, lr=lr, seed=seed,
                         adversarial=adversarial.lower() if adversarial else None, eps=eps,
                         steps=steps, alpha=alpha, lr_schedule=lr_schedule.lower(),
                         accelat_k=accelat_k, accelat_patience=accelat_patience,
                         accelat_threshold=accelat_threshold, accelat_factor=accelat_factor,
                         lr_floor=lr_floor, val_fraction=val_fraction, step_size=step_size,
                         gamma=gamma, train_noise=train_noise, output_noise=output_noise,
                         output_noise_seed=output_noise_seed,
                         squeeze_bits=squeeze_bits, precision=precision.lower(),
                         energy_profiler=energy_profiler)
    config.validate()
    progress, on_epoch = _epoch_progress(epochs)
    with progress:
        _, card = train_model(config, out_dir, on_epoch=on_epoch)
    robust = ("" if card.robust_accuracy is None else
              f", PGD robust accuracy {card.robust_accuracy:.2%} at eps {config.eps:g}")
    short = ("" if card.epochs_run == card.epochs_requested
             else f" (of {card.epochs_requested} requested)")
    out.print(f"{card.name}: test accuracy {card.accuracy:.2%}{robust} after {card.epochs_run} "
              f"epochs{short}, train time {card.train_time_s:.1f} s -> {out_dir}",
              highlight=False)
    if card.stopped_early:
        err.print(f"[yellow]stopped early[/] {card.stop_reason}", highlight=False)


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
    from edgerob.host.export import export

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
    force_target: Annotated[bool, typer.Option(
        "--force-target", help="Measure even where this machine is not the target's device "
                               "(its detect rules); the run is marked forced.")] = False,
):
    """Measure a model on a target over a profile's sweep and store the results.

    A local target is verified first: this machine must be the device it names (a family name
    such as jetson-orin resolves to the member this machine is), else exit 2 with nothing
    stored, unless --force-target.

    A target whose host is ssh://user@host is profiled remotely: the bundle is copied there,
    run, and its results ingested here."""
    from edgerob.device.sweep import cells, run_profile
    from edgerob.store import Store

    if bundle is not None:
        from edgerob.fleet.bundle import load_bundle, results_url

        tgt, prof, work = load_bundle(bundle)  # verifies every file first
        db = Store(store or results_url(bundle))
        store = store or results_url(bundle)
    else:
        from edgerob.catalog.profiles import load_profile
        from edgerob.catalog.targets import resolve_target, verify_target

        tgt, prof = resolve_target(target), load_profile(profile_name)
        if tgt.is_local:
            verify_target(tgt, force=force_target)  # refuse before any training
        elif force_target:
            raise EdgerobError("--force-target is for local targets: a remote device verifies "
                               "its own target when it runs the bundle")
        store = store or DEFAULT_URL
        db = Store(store)  # open early: a bad URL fails before any training
        work = _prepare(prof, model)
    if not tgt.is_local and bundle is None:
        from edgerob.fleet.remote import profile_remote

        with err.status("remote profiling") as status:
            counts = profile_remote(tgt, prof, work, db, new_run=new_run,
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
        result = run_profile(tgt, prof, work, db, new_run=new_run, threads=threads,
                             on_cell=on_cell, force_target=force_target)
    forced = {r["run_id"] for r in db.runs() if r.get("forced_target")}
    _print_measurements(result.rows, f"{tgt.name} / {prof.name}", forced)
    if result.run_id in forced:
        err.print(f"[yellow]warning[/] run {result.run_id} is marked forced: this machine is "
                  f"not {tgt.name} (--force-target)")
    _print_versus_clean(result.rows)
    _print_failures(result.failures, result.attack_cells)
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


def _prepare(profile, model: Path | None):
    """The host's half of the pipeline: the workload (artifacts, input sets) of a model folder."""
    from edgerob.host.workload import prepare_workload

    folder = model or _default_model()
    with err.status("preparing the workload (export, input sets)"):
        return prepare_workload(profile, folder)


def _default_model() -> Path:
    from edgerob.host.train import TrainConfig, default_model

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
    from edgerob.catalog.profiles import load_profile
    from edgerob.catalog.targets import load_target
    from edgerob.fleet.bundle import write_bundle

    tgt, prof = load_target(target), load_profile(profile_name)
    folder = write_bundle(tgt, prof, _prepare(prof, model), out_dir)
    out.print(f"bundle for {tgt.name} / {prof.name} -> {folder}\n"
              f"on the device: edgerob profile --bundle {folder.name}; then here: "
              f"edgerob ingest {folder.name}")


@app.command()
@user_errors
def ingest(
    source: Annotated[Optional[Path], typer.Argument(help="A bundle folder with results, or a "
                                                          "results .db file.")] = None,
    mlperf: Annotated[Optional[Path], typer.Option(
        "--mlperf", help="Import published MLPerf Inference results (ResNet-50, VALID only): a "
                         "results repository checkout or any folder under it.")] = None,
    store: StoreOpt = DEFAULT_URL,
):
    """Import a device's results into the store, skipping rows already there."""
    from edgerob.fleet.bundle import ingest as ingest_results
    from edgerob.store import Store

    if (source is None) == (mlperf is None):
        raise EdgerobError("give a bundle folder (or results .db) or --mlperf PATH, not both")
    if mlperf is not None:
        from edgerob.fleet.mlperf import ingest_mlperf

        counts = ingest_mlperf(mlperf, Store(store), on_skip=lambda line: err.print(
            f"skipped: {line}", highlight=False, markup=False, soft_wrap=True))
        out.print(f"imported {counts['imported']} MLPerf results (source mlperf) for "
                  f"{', '.join(counts['targets'])}; {counts['already_stored']} already stored, "
                  f"{len(counts['invalid'])} INVALID skipped, {len(counts['problems'])} "
                  f"file(s) unreadable -> {store}", highlight=False)
        return
    from edgerob.fleet.bundle import ingest as ingest_results

    counts = ingest_results(source, Store(store))
    out.print(f"ingested {counts['runs']} new runs, {counts['measurements']} measurements, "
              f"{counts['failures']} failure records; {counts['skipped']} rows already stored "
              f"-> {store}")


targets_app = typer.Typer(no_args_is_help=True, help="The device catalog (targets/*.yaml).")
app.add_typer(targets_app, name="targets")


@targets_app.command("list")
@user_errors
def targets_list():
    """Every target: runtime, profiler, peak TOPS, bandwidth, TDP and price; then the families
    (names such as jetson-orin that resolve to one member on the device itself).

    Peak figures are dense, GPU only (no DLA), tensor cores where the device has them, at the
    power mode of the TDP column."""
    from edgerob.catalog import list_names
    from edgerob.catalog.targets import families, load_target

    table = Table("name", "runtime", "profiler", "host", "int8 TOPS", "fp16 TOPS", "GB/s",
                  "TDP W", "USD", "USD/h", title="targets (peak TOPS: dense, GPU only, at TDP)")
    table.columns[0].no_wrap = True
    for name in list_names("targets"):
        t = load_target(name)
        tops = t.specs.peak_tops
        p = t.price
        table.add_row(t.name, t.runtime, t.profiler, t.host, _fmt(tops.get("int8"), "g"),
                      _fmt(tops.get("fp16"), "g"), _fmt(t.specs.memory_bandwidth_gbs, "g"),
                      _fmt(t.specs.tdp_w, "g"),
                      _fmt(p.purchase_usd, ",.0f") + (f" {p.purchase_kind}, {p.purchase_as_of}"
                                                      if p.purchase_usd else ""),
                      _fmt(p.cloud_usd_per_h, ".2f") + (f" ({p.cloud_as_of})"
                                                        if p.cloud_usd_per_h else ""))
    out.print(table)
    fam = Table("family", "members (resolved on the device by device-tree model and memory, "
                "or NVML name and memory)", title="families")
    for name, members in families().items():
        fam.add_row(name, ", ".join(members))
    out.print(fam)


@targets_app.command("show")
@user_errors
def targets_show(name: Annotated[str, typer.Argument(help="Target name or YAML path.")]):
    """One target's file, with the sources of its figures."""
    from edgerob.catalog import find_yaml
    from edgerob.catalog.targets import load_target

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
    from edgerob.analysis.compare import provenance, source_label

    sources = {r["run_id"]: source_label(provenance(r)) for r in db.runs()}
    for r in rows:
        r["source"] = sources.get(r["run_id"], "measured")
    forced = {r["run_id"] for r in db.runs() if r.get("forced_target")}
    _print_measurements(rows, store, forced)
    if forced & {r["run_id"] for r in rows}:
        err.print(FORCED_NOTE)
    _print_versus_clean(rows)
    cells = db.attack_cells(run_id=run, target=target)
    _print_failures([f for f in db.failures(run) if not target or f["target"] == target], cells)
    _print_attack_cells(cells)
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
    official: Annotated[bool, typer.Option(help="AutoAttack as fra31/auto-attack's standard "
                                                "version (100 steps, 9 target classes, Square "
                                                "5000 queries on the official schedule).")
                        ] = False,
    samples: Annotated[Optional[int], typer.Option(min=1, help="First N test images.")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for the .npz "
                                                     "input sets (default MODEL_DIR/inputs).")] = None,
    seed: int = 0,
    half_width: Annotated[Optional[float], typer.Option(
        help="Attack in a seeded random order and stop when the robust accuracy's "
             "anytime-valid interval has this half-width, in (0, 0.5].")] = None,
    confidence: Annotated[float, typer.Option(help="Of that interval, in (0, 1).")] = 0.95,
    max_samples: Annotated[Optional[int], typer.Option(
        help="With --half-width: attack at most this many samples.")] = None,
):
    """Craft white-box input sets on the fp32 model; report clean and robust accuracy."""
    from edgerob.host.attacks import craft, input_set_name
    from edgerob.host.data import load_dataset
    from edgerob.host.models import load_checkpoint
    from edgerob.device.sequential import StopRule, check_rule

    stop = None
    if half_width is not None:
        check_rule(half_width, confidence, max_samples, "edgerob attack")
        stop = StopRule(half_width, confidence, max_samples)
    elif max_samples is not None:
        raise EdgerobError("--max-samples needs --half-width (without it every sample is "
                           "attacked)")
    names, radii = _csv_list(attacks), _csv_list(eps, float)
    model, card = load_checkpoint(model_dir)
    data = load_dataset(card.dataset, card.dataset_root)
    n = min(samples or len(data.x_test), len(data.x_test))
    import numpy as np

    ids = np.arange(n, dtype=np.int64)
    folder = out_dir or Path(model_dir) / "inputs"
    table = Table("input set", "clean acc", "robust acc", "naive robust acc", "strength",
                  "crafting s", "file", title=f"{card.name}: white-box attacks on {n} images")
    if stop:
        for col in ("samples used", f"{stop.confidence:.0%} interval", "stopped by", "saved s"):
            table.add_column(col)
    for name in names:
        for e in radii:
            s = craft(model, data.x_test[:n], data.y_test[:n], ids, name, e, precise=precise,
                      official=official, seed=seed, stop=stop)
            path = folder / f"{input_set_name(name, e)}.npz"
            s.save(path)
            seq = s.params.get("sequential")
            table.add_row(s.name, _fmt(s.clean_accuracy, ".2%"), _fmt(s.robust_accuracy, ".2%"),
                          _fmt(s.params.get("naive_robust_accuracy"), ".2%"), s.strength or "",
                          _fmt(s.crafting_time_s, ".2f"), str(path),
                          *(_sequential_cells(seq) if seq else ()))
            for w in s.params.get("warnings", []):
                err.print(f"[yellow]warning[/] {s.name}: {w}", highlight=False)
    out.print(table)


def _sequential_cells(seq: dict) -> tuple[str, ...]:
    """samples used of available, the interval, why it stopped, and the time not spent (the
    unattacked samples at the measured time per sample: a projection)."""
    n, total = seq["n_attacked"], seq["n_available"]
    return (f"{n}/{total} ({n / total:.0%})", f"[{seq['ci_low']:.3f}, {seq['ci_high']:.3f}]",
            seq["stopped_by"], _fmt(seq["projected_saved_s"], ".1f"))


@app.command()
@user_errors
def doctor():
    """What can run here: runtimes, profilers and the target for this machine.

    Lists each runtime and profiler, available or not and why, and the catalog target that fits
    this machine."""
    from edgerob.device.profilers import REGISTRY as PROFILERS, profiler_class
    from edgerob.device.runtimes import REGISTRY as RUNTIMES, runtime_class
    from edgerob.catalog.targets import describe_facts, machine_facts, matching_targets

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
    out.print(f"this machine: {describe_facts(facts)}", highlight=False, markup=False)
    if fits:
        out.print(f"target for this machine: [bold]{fits[0].name}[/] "
                  f"(edgerob profile --target {fits[0].name})")


TargetsOpt = Annotated[Optional[str], typer.Option(
    "--targets", help="Comma-separated target names (default: every target in the store).")]
InferencesOpt = Annotated[float, typer.Option(
    "--inferences-per-s", help="Sustained demand (inferences/s).")]
HoursOpt = Annotated[float, typer.Option("--hours-per-day",
                                         help="Service hours per day.")]
YearsOpt = Annotated[float, typer.Option("--years",
                                         help="Years of service.")]
KwhOpt = Annotated[float, typer.Option("--usd-per-kwh",
                                       help="Electricity price (USD/kWh).")]
UtilisationOpt = Annotated[float, typer.Option(
    "--utilisation", help="Fraction of a device's measured throughput to plan on.")]
TrainTimeOpt = Annotated[Optional[float], typer.Option(
    "--train-time-s",
    help="Training time (s) of the model, for the TRASH score (model.json train_time_s).")]
TrainSamplesOpt = Annotated[Optional[int], typer.Option(
    "--train-samples", min=1, help="Training samples the model was trained on, for the TRASH "
                                   "score (model.json n_train_samples).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def _print_json(obj) -> None:
    import json

    typer.echo(json.dumps(obj, indent=2, default=str))


@app.command()
@user_errors
def compare(
    targets: TargetsOpt = None,
    store: StoreOpt = DEFAULT_URL,
    out_dir: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Folder for the Pareto and Kaplan-Meier plots (PNG + SVG).")] = None,
    json_out: JsonOpt = False,
):
    """Compare targets per precision and batch size, with Pareto fronts.

    Latency (ties within noise), throughput, power, energy, accuracy under attack, time and
    energy to failure; Pareto fronts as tables and plots."""
    from edgerob.analysis.compare import compare_fleet, config_label, public_rows, side_by_side_notes
    from edgerob.store import Store

    result = compare_fleet(Store(store), targets, out_dir)
    rows, fronts = result["rows"], result["fronts"]
    if json_out:
        _print_json({"rows": public_rows(rows), "fronts": [
            {**{k: v for k, v in f.items() if k != "front"},
             "front": [config_label(r) for r in f["front"]]} for f in fronts]})
        return
    adv = sorted({k for r in rows for k in r if k.startswith("accuracy@")})
    runtimes = len({r["runtime"] for r in rows}) > 1
    sourced = any(r["source_label"] != "measured" for r in rows)  # imported rows: say which
    table = Table(title=f"fleet ({store}): latency rank within batch size, =N tied within noise; "
                        f"accuracy per input set; Kaplan-Meier medians to failure")
    for col in ("target", *(["source"] if sourced else []), *(["runtime"] if runtimes else []),
                "prec", "batch", "rank", "p50 ms", "p99 ms", "samples/s", "W", "J/inf", "clean", *[a[9:] for a in adv],
                "s to fail", "J to fail", "records", "clean wrong"):
        table.add_column(col, justify="left" if col in ("target", "source", "runtime", "prec")
                         else "right", no_wrap=col in ("target", "runtime"))
    for r in rows:
        rank = r["latency_rank"]
        table.add_row(_target_cell(r["target"], r["forced"]),
                      *([r["source_label"]] if sourced else []),
                      *([r["runtime"]] if runtimes else []), r["precision"],
                      str(r["batch_size"]),
                      "—" if rank is None else f"{'=' if r['latency_tie'] else ''}{rank}",
                      _fmt(r["latency_p50_ms"], ".3f"), _fmt(r["latency_p99_ms"], ".3f"),
                      _fmt(r["throughput_sps"], ",.0f"), _fmt(r["power_mean_w"], ".2f"),
                      _fmt(r["energy_per_inference_j"], ".3g"), _fmt(r["accuracy"], ".2%"),
                      *[_fmt(r.get(a), ".2%") for a in adv],
                      _fmt(r["median_time_to_failure_s"], ".3g"),
                      _fmt(r["median_energy_to_failure_j"], ".3g"), str(r["failure_records"]),
                      _fmt(r["failure_clean_wrong"], "d"))
    out.print(table)
    if any(r["forced"] for r in rows):
        err.print(FORCED_NOTE)
    for line in side_by_side_notes(rows):
        err.print(f"note: {line}", highlight=False, markup=False)
    for f in fronts:
        if not f["front"]:
            reasons = sorted({x["reason"] for x in f["excluded"]})
            err.print(f"{f['name']}: no configuration has both values ({'; '.join(reasons)})",
                      highlight=False)
            continue
        ft = Table("configuration", f["x_label"], f["y_label"],
                   title=f"Pareto front: {f['name'].replace('_', ' ')} "
                         f"({len(f['front'])} of {f['considered']})")
        for r in f["front"]:
            ft.add_row(config_label(r), _fmt(r[f["x"]], ".4g"), _fmt(r[f["y"]], ".4g"))
        out.print(ft)
        if f["excluded"]:
            err.print(f"{f['name']}: {len(f['excluded'])} configuration(s) left out, e.g. "
                      f"{f['excluded'][0]['config']}: {f['excluded'][0]['reason']}",
                      highlight=False)
    if result["plots"]:
        err.print(f"wrote {len(result['plots'])} plot files to {out_dir}")


def _workload(inferences_per_s, hours_per_day, years, usd_per_kwh, utilisation):
    from edgerob.analysis.cost import Workload

    return Workload(inferences_per_s=inferences_per_s, hours_per_day=hours_per_day,
                    years=years, electricity_usd_per_kwh=usd_per_kwh, utilisation=utilisation)


@app.command()
@user_errors
def cost(
    targets: TargetsOpt = None,
    store: StoreOpt = DEFAULT_URL,
    inferences_per_s: InferencesOpt = 100.0,
    hours_per_day: HoursOpt = 24.0,
    years: YearsOpt = 3.0,
    usd_per_kwh: KwhOpt = 0.15,
    utilisation: UtilisationOpt = 0.7,
    train_time_s: TrainTimeOpt = None,
    train_samples: TrainSamplesOpt = None,
    candidate: Annotated[Optional[str], typer.Option(
        "--candidate", help="Predict this target (a spec sheet, no measurements needed) from "
                            "the measured ones, with leave-one-target-out validation.")] = None,
    json_out: JsonOpt = False,
):
    """Cost of ownership for a workload, and what a failure costs the target.

    Capital, energy, USD and kWh per million inferences, devices needed; the attacker's side:
    USD and joules to a failure, TRASH. --candidate predicts a device from its spec sheet."""
    from edgerob.analysis.compare import fleet_table
    from edgerob.store import Store

    db = Store(store)
    w = _workload(inferences_per_s, hours_per_day, years, usd_per_kwh, utilisation)
    if candidate:
        _cost_candidate(db, candidate, targets, w, json_out)
        return
    from edgerob.analysis.cost import cost_table, workload_dict

    costs = cost_table(fleet_table(db, targets), w, train_time_s, n_train_samples=train_samples)
    if not costs:
        raise EdgerobError(f"no measurements in {store}: run `edgerob profile` first")
    if json_out:
        _print_json({"workload": workload_dict(w), "rows": costs})
        return
    table = Table(title=f"cost of ownership: {w.inferences_per_s:g} inferences/s, "
                        f"{w.hours_per_day:g} h/day, {w.years:g} years ({w.service_h:,.0f} h), "
                        f"utilisation {w.utilisation:.0%}, {w.electricity_usd_per_kwh:g} USD/kWh")
    for col in ("target", "source", "prec", "batch", "pricing", "devices", "capital USD",
                "energy kWh", "energy USD", "total USD", "USD / M inferences",
                "kWh / M inferences"):
        table.add_column(col, justify="left" if col in ("target", "source", "prec", "pricing")
                         else "right", no_wrap=col == "target")
    attacker = Table(title="attacker's side: what a failure costs the target (Kaplan-Meier "
                           "medians of each sample's share of the queries; E[T] restricted to "
                           "the attack budget)")
    for col in ("target", "prec", "batch", "attack", "s to failure", "USD to failure",
                "J to failure", "E[T] s", "TRASH"):
        attacker.add_column(col, justify="left" if col in ("target", "prec", "attack")
                            else "right", no_wrap=col == "target")
    for c in costs:
        trash = c.get("trash_score")
        key = (c["target"], c.get("precision") or "—", str(c.get("batch_size")))
        table.add_row(key[0], c.get("source_label") or "measured", *key[1:],
                      c.get("pricing") or "—", _fmt(c.get("devices_needed"), "d"),
                      _fmt(c.get("capital_usd"), ",.2f"), _fmt(c.get("energy_kwh"), ",.1f"),
                      _fmt(c.get("energy_usd"), ",.2f"), _fmt(c.get("total_usd"), ",.2f"),
                      _fmt(c.get("usd_per_million_inferences"), ".4g"),
                      _fmt(c.get("kwh_per_million_inferences"), ".4g"))
        attacker.add_row(*key, c.get("failure_attack") or "—",
                         _fmt(c.get("attacker_s_to_failure"), ".3g"),
                         _fmt(c.get("attacker_usd_to_failure"), ".3g"),
                         _fmt(c.get("attacker_j_to_failure"), ".3g"),
                         _fmt(c.get("expected_time_to_failure_s"), ".3g"),
                         "—" if trash is None else (f"[bold red]{trash:.3g} ⚑[/]" if trash > 1
                                                    else f"{trash:.3g}"))
    out.print(table)
    out.print(attacker)
    notes = sorted({f"{c['target']}: {n}" for c in costs for n in c.get("notes", [])})
    for n in notes:
        err.print(f"note: {n}", highlight=False)
    if any((c.get("trash_score") or 0) > 1 for c in costs):
        err.print("⚑ TRASH > 1: cheaper to break than to build ((train time / training "
                  "samples) / E[T], E[T] per attacked sample, restricted to the attack budget)")


def _cost_candidate(db, candidate: str, targets, w, json_out: bool) -> None:
    from rich.markup import escape

    from edgerob.analysis.compare import leave_one_target_out, predict_candidate
    from edgerob.analysis.cost import candidate_costs, workload_dict
    from edgerob.catalog.targets import load_target

    tgt = load_target(candidate)
    preds = candidate_costs(predict_candidate(db, tgt, targets), tgt, w)
    loo = leave_one_target_out(db, targets)
    if json_out:
        _print_json({"candidate": tgt.name, "workload": workload_dict(w), "predictions": preds,
                     "leave_one_target_out": loo})
        return
    table = Table(title=f"{tgt.name}: predicted from the other targets' rows (measured, or "
                        f"published MLPerf), {preds[0]['level'] if preds else 0.95:.0%} "
                        f"prediction intervals; 'true' is {tgt.name}'s own row, never fitted")
    for col in ("group", "from", "predicts", "predicted", "interval", "true", "inside",
                "samples/s", "J/inf", "J/inf interval", "median s to failure", "devices",
                "total USD", "USD / M inferences"):
        table.add_column(col, justify="left" if col in ("group", "predicts") else "right")

    def interval(p, key):
        lo, hi = p[f"{key}_lo"], p[f"{key}_hi"]
        return "—" if lo is None else f"{lo:.3g}–{hi:.3g}"

    for p in preds:
        c = p.get("cost") or {}
        k = p["response"]
        inside = {None: "—", True: "yes", False: "no"}[p["truth_in_interval"]]
        table.add_row(p["group"], str(p["n_targets"]), k, _fmt(p[k], ".4g"), interval(p, k),
                      _fmt(p["truth"], ".4g"), inside, _fmt(p["throughput_sps"], ",.0f"),
                      _fmt(p["energy_per_inference_j"], ".3g"),
                      interval(p, "energy_per_inference_j"),
                      _fmt(p["median_time_to_failure_s"], ".3g"),
                      _fmt(c.get("devices_needed"), "d"), _fmt(c.get("total_usd"), ",.2f"),
                      _fmt(c.get("usd_per_million_inferences"), ".4g"))
    out.print(table)
    for p in preds:
        if p["truth_note"]:
            err.print(f"{p['group']}: {tgt.name}'s published row is not comparable: "
                      f"{p['truth_note']}", highlight=False, markup=False)
    for p in preds:
        for m, tag in ((p["model"], p["model_loto_rmse_log"]), (p["energy_model"], None)):
            if m:
                score = ("" if tag is None else f" (chosen by leave-one-target-out: RMS log "
                                                f"error {tag:.3f})")
                err.print(f"{p['group']}: model {m}{score}", highlight=False, markup=False)
    warned: dict[str, list[str]] = {}
    for p in preds:
        for text in p["warnings"]:
            warned.setdefault(text, []).append(p["group"])
    for text, where in warned.items():
        err.print(f"[yellow]warning[/] {escape(text)} ({', '.join(where)})", highlight=False)
    for p in preds:
        for text in p["notes"]:
            if "needed" in text or text.startswith("excluded"):
                err.print(f"{p['group']}: {text}", highlight=False, markup=False)
    lt = Table("held-out target", "cells", "median |rel err|", "max |rel err|",
               "inside interval", "median |rel err| J/inf",
               title="leave-one-target-out: how far to trust the prediction")
    for r in loo:
        lt.add_row(r["target"], str(r["cells"]), _fmt(r["median_abs_rel_error"], ".1%"),
                   _fmt(r["max_abs_rel_error"], ".1%"),
                   _fmt(r["inside_interval_fraction"], ".0%"),
                   _fmt(r["energy_median_abs_rel_error"], ".1%"))
    out.print(lt)


@app.command()
@user_errors
def report(
    out_path: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write.")] = Path(
        "report.html"),
    targets: TargetsOpt = None,
    store: StoreOpt = DEFAULT_URL,
    inferences_per_s: InferencesOpt = 100.0,
    hours_per_day: HoursOpt = 24.0,
    years: YearsOpt = 3.0,
    usd_per_kwh: KwhOpt = 0.15,
    utilisation: UtilisationOpt = 0.7,
    train_time_s: TrainTimeOpt = None,
    train_samples: TrainSamplesOpt = None,
):
    """Write one self-contained HTML report that opens offline.

    Fleet table, Pareto plots, cost, leave-one-target-out prediction error, survival curves,
    every measurement's fingerprint."""
    from edgerob.analysis.report import write_report
    from edgerob.store import Store

    w = _workload(inferences_per_s, hours_per_day, years, usd_per_kwh, utilisation)
    path = write_report(Store(store), out_path, targets, w, train_time_s,
                        n_train_samples=train_samples)
    out.print(f"report -> {path} ({path.stat().st_size / 1024:,.0f} KiB, self-contained)")


def _fmt(v, spec: str) -> str:
    return "—" if v is None else format(v, spec)


FORCED_NOTE = ("target*: forced, measured with --force-target on a machine that is not the "
               "target (runs.target_facts says what it was)")


def _target_cell(name: str, forced: bool) -> str:
    """A target's name, marked * where it was measured with --force-target on another machine
    (short: these tables are wide)."""
    return f"{name}[red]*[/]" if forced else name


def _print_measurements(rows: list[dict], title: str, forced: set = frozenset()) -> None:
    table = Table(title=title)
    # the source column (measured here / imported) only where some row was imported
    sourced = any(r.get("source", "measured") != "measured" for r in rows)
    for col in ("target", *(["source"] if sourced else []), "precision", "batch", "input set",
                "p50 ms", "p99 ms", "mean ms", "std ms", "samples/s", "accuracy", "power W",
                "J/inference", "iters"):
        table.add_column(col, justify="left" if col in ("target", "source", "precision",
                                                        "input set") else "right", no_wrap=True)
    for r in rows:
        table.add_row(_target_cell(r["target"], r["run_id"] in forced),
                      *([r.get("source", "measured")] if sourced else []), r["precision"],
                      str(r["batch_size"]), r["input_set"],
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
                  "fp32 robust acc [interval] (samples used)",
                  title="adversarial vs clean inputs (same precision and batch size)")
    for r in adv:
        seq = (f"{r['seq_estimate']:.3f} [{r['seq_ci_low']:.3f}, {r['seq_ci_high']:.3f}] "
               f"({r['n_samples']}/{r['seq_n_available']})"
               if r.get("seq_estimate") is not None else "—")
        table.add_row(r["precision"], str(r["batch_size"]), r["input_set"],
                      _fmt(r["accuracy"], ".2%"), _fmt(r["latency_vs_clean_ratio"], ".3f"),
                      _fmt(r["latency_vs_clean_p"], ".2g"),
                      _fmt(r["latency_vs_clean_cliffs_delta"], "+.2f"),
                      _fmt(r["energy_vs_clean_ratio"], ".3f"), seq)
    out.print(table)


def _sequential_fit_note(db) -> list[str]:
    """How many records the fit has where query attacks stopped early (it uses those that
    exist: a random sample of each such cell, so nothing is imputed)."""
    cells = [c for c in db.attack_cells() if c["stop_half_width"] is not None]
    if not cells:
        return []
    used, available = sum(c["n_sampled"] for c in cells), sum(c["n_available"] for c in cells)
    return [f"{len(cells)} query-attack cells stopped sequentially: the fit uses the {used} "
            f"samples attacked of {available} available there (a seeded random sample)"]


def _print_attack_cells(cells: list[dict]) -> None:
    """Query-attack cells: samples used of available, the failure proportion and its interval,
    the KM median time to failure and the time not spent."""
    if not cells:
        return
    table = Table("precision", "batch", "attack", "samples used", "stopped by", "failure rate",
                  "interval", "KM median s [interval]", "attack s", "saved s",
                  title="query-attack cells (interval: anytime-valid where the cell stopped "
                        "sequentially; KM interval: Brookmeyer-Crowley, fixed-sample)")
    for c in cells:
        used = f"{c['n_sampled']}/{c['n_available']}" if c["n_sampled"] is not None else "—"
        ci = (f"[{c['failure_ci_low']:.3f}, {c['failure_ci_high']:.3f}]"
              if c["failure_ci_low"] is not None else "—")
        km = (f"{_fmt(c['km_median_s'], '.3g')} [{_fmt(c['km_median_low_s'], '.3g')}, "
              f"{_fmt(c['km_median_high_s'], '.3g')}]")
        table.add_row(c["precision"], str(c["batch_size"]), f"{c['attack']}@{c['eps']:g}", used,
                      c["stopped_by"] or "every sample", _fmt(c["failure_rate"], ".3f"), ci, km,
                      _fmt(c["attack_wall_s"], ".1f"), _fmt(c["projected_saved_s"], ".1f"))
    out.print(table)


def _print_failures(records: list[dict], cells: list[dict]) -> None:
    """Failure records per query-attack cell, with the samples left out because the artifact
    misclassifies them clean (`attack_cells`; — for cells stored before it was counted)."""
    if not records and not cells:
        return
    from edgerob.device.failures import km_median

    def key(r: dict) -> tuple:
        return r["precision"], r["batch_size"], f"{r['attack']}@{r['eps']:g}"

    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault(key(r), []).append(r)
    clean_wrong: dict[tuple, int] = {}
    for c in cells:
        groups.setdefault(key(c), [])
        clean_wrong[key(c)] = clean_wrong.get(key(c), 0) + c["n_clean_wrong"]
    table = Table("precision", "batch", "attack", "clean wrong", "attacked", "failed",
                  "censored", "median queries", "median time s", "median energy J",
                  title="failure records (clean-misclassified samples are not attacked; "
                        "Kaplan-Meier medians of the wall time and energy of the queries; — "
                        "where over half survive)")
    for (prec, bs, name), rs in groups.items():
        ev = [r["event"] for r in rs]
        energy = [r["energy_j"] for r in rs]
        table.add_row(prec, str(bs), name, _fmt(clean_wrong.get((prec, bs, name)), "d"),
                      str(len(rs)), str(sum(ev)), str(len(rs) - sum(ev)),
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
                                               "lognormal, loglogistic, exponential, gengamma "
                                               "(slow: about 40 s per 100,000 records).")
                        ] = "weibull,lognormal,loglogistic",
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
    """Fit AFT survival models to the failure records.

    Compares families (AIC, BIC, concordance, calibration), prints time ratios, writes plots
    and the TRASH score."""
    import json

    from rich.markup import escape

    from edgerob.analysis import survival
    from edgerob.store import Store

    db = Store(store)
    df = survival.load_failures(db, duration)
    result = survival.fit_models(
        df, families=_csv_list(families),
        covariates=_csv_list(covariates) if covariates is not None else None, horizon=horizon)
    notes = list(result.notes) + _sequential_fit_note(db)
    trash = None
    if result.duration == "time":
        training = survival.cached_training(result.data)
        if training:
            trash = result.trash({m: t for m, (t, _) in training.items()},
                                 {m: n for m, (_, n) in training.items()})
            notes += sorted({f"{r.model}: {r.note}" for r in trash.itertuples() if r.note})
        else:
            notes.append("TRASH score skipped: no cached model card with a train time matches "
                         "these records' models (pass train_time_s and n_train_samples to "
                         "FitResult.trash)")
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
            table = Table("model", "target", "train s", "training samples", "E[T] s", "TRASH",
                          "", title="TRASH score: (train time / training samples) / expected "
                                    "time to failure per attacked sample")
            for r in trash.itertuples():
                table.add_row(escape(r.model), escape(r.target), f"{r.train_time_s:.4g}",
                              "—" if r.n_train_samples != r.n_train_samples  # NaN: unknown
                              or r.n_train_samples is None else f"{int(r.n_train_samples)}",
                              f"{r.expected_time_s:.4g}",
                              "not estimable" if r.note else f"{r.trash:.4g}",
                              "[red]cheaper to break than to build[/]"
                              if r.cheaper_to_break else "")
            out.print(table)
    for n in notes:
        err.print(f"note: {n}", highlight=False, markup=False)
    err.print(f"wrote {len(paths)} files to {out_dir}")


@app.command("arch-score")
@user_errors
def arch_score(
    depths: Annotated[str, typer.Option(help="Comma-separated ResNet depths (6n+2).")] = "8,14,20",
    widths: Annotated[str, typer.Option(help="Comma-separated base widths.")] = "4,8,16",
    dataset: Annotated[str, typer.Option(help="digits, mnist or cifar10.")] = "digits",
    data_root: Annotated[Optional[str], typer.Option(help="Folder for mnist/cifar10.")] = None,
    batch: Annotated[int, typer.Option(help="Images in the NTK batch.")] = 32,
    seed: Annotated[int, typer.Option(help="Initialisation, batch and attack seed.")] = 0,
    eps: Annotated[float, typer.Option(help="L-inf radius in [0, 1] (scoring attack and "
                                            "training).")] = 0.1,
    attack_steps: Annotated[int, typer.Option(help="PGD steps crafting the adversarial "
                                                    "batch.")] = 3,
    output: Annotated[str, typer.Option(help="NTK of the summed logits (sum) or the per-logit "
                                             "average (mean).")] = "sum",
    validate: Annotated[bool, typer.Option("--validate", help="Also train each architecture "
                                                              "(standard and adversarial) and "
                                                              "rank-correlate.")] = False,
    epochs: Annotated[int, typer.Option(help="Epochs per training with --validate.")] = 3,
    adversarial: Annotated[str, typer.Option(help="fgsm-rs or pgd, with --validate.")
                           ] = "fgsm-rs",
    robust_eval_samples: Annotated[int, typer.Option(help="Test images for PGD robust "
                                                          "accuracy, with --validate.")] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
):
    """Score ResNet architectures at initialisation from their NTK on clean and adversarial
    inputs (Wu et al., ICLR 2024); --validate checks the scores against trained accuracy."""
    import json

    from edgerob.host import ntk

    archs = ntk.parse_archs(_csv_list(depths, int), _csv_list(widths, int))
    if validate:
        res = ntk.validate(archs, epochs=epochs, eps=eps, adversarial=adversarial,
                           robust_eval_samples=robust_eval_samples, dataset=dataset,
                           batch=batch, seed=seed, attack_steps=attack_steps, output=output,
                           data_root=data_root,
                           on_arch=None if as_json else lambda r: err.print(
                               f"trained {r['arch']} w{r['width']}", highlight=False))
        rows = res["archs"]
    else:
        res = None
        rows = ntk.arch_scores(archs, dataset, batch, seed, eps, attack_steps, output,
                               data_root=data_root)
    if as_json:
        typer.echo(json.dumps({"archs": rows, **({k: v for k, v in res.items() if k != "archs"}
                                                 if res else {})}, default=str))
        return
    table = Table(title=f"NTK scores at initialisation ({output} of logits, batch {batch}, "
                        f"PGD-{attack_steps} at eps {eps:g} for adv)")
    cols = ("arch", "width", "params", "input", "min eig", "max eig", "cond", "trace",
            "logdet", "seconds")
    for col in cols:
        table.add_column(col, justify="left" if col in ("arch", "input") else "right")
    for r in rows:
        for kind in ("clean", "adv"):
            s = r[kind]
            table.add_row(r["arch"], str(r["width"]), f"{r['parameters']:,}", kind,
                          _fmt(s["min_eig"], ".4g"), _fmt(s["max_eig"], ".4g"),
                          _fmt(s["cond"], ".4g"), _fmt(s["trace"], ".4g"),
                          _fmt(s["logdet"], ".4g"), _fmt(r[f"{kind}_s"], ".3f"))
    out.print(table)
    if res is None:
        return
    truth = Table(title=f"measured: {epochs} epochs, standard and {adversarial} at eps {eps:g}")
    for col in ("arch", "width", "std clean", "std robust", "adv clean", "adv robust",
                "train wall s"):
        truth.add_column(col, justify="left" if col == "arch" else "right")
    for r in rows:
        truth.add_row(r["arch"], str(r["width"]), _fmt(r["std_clean"], ".1%"),
                      _fmt(r["std_robust"], ".1%"), _fmt(r["adv_clean"], ".1%"),
                      _fmt(r["adv_robust"], ".1%"), _fmt(r["std_wall_s"] + r["adv_wall_s"],
                                                         ".1f"))
    out.print(truth)
    corr = Table(title=f"rank correlation with measured accuracy (Spearman rho [95% bootstrap "
                       f"CI] / Kendall tau; n = {len(rows)})")
    corr.add_column("score")
    for m in ntk.METRICS:
        corr.add_column(m.replace("_", " "), justify="right")
    for key, per in res["correlations"].items():
        cells = []
        for m in ntk.METRICS:
            c = per[m]
            cells.append("—" if c["spearman"] is None else
                         f"{c['spearman']:+.2f} [{_fmt(c['spearman_lo'], '+.2f')}, "
                         f"{_fmt(c['spearman_hi'], '+.2f')}] / {_fmt(c['kendall'], '+.2f')}")
        corr.add_row(key, *cells)
    out.print(corr)
    c = res["compute"]
    out.print(f"compute: scoring {c['score_s']:.1f} s vs training {c['train_wall_s']:.1f} s "
              f"wall ({c['train_s']:.1f} s in-loop): {c['speedup']:.0f}x cheaper, "
              f"{c['saved_fraction']:.1%} saved", highlight=False)


@app.command()
@user_errors
def optimize(
    trials: Annotated[int, typer.Option(min=0, help="Trials to run here (0: only show the "
                                                    "study's front).")] = 8,
    storage: Annotated[str, typer.Option(help="Optuna storage URL: sqlite:///FILE, or "
                                              "postgresql://... for many workers.")
                       ] = "sqlite:///edgerob.db",
    study: Annotated[str, typer.Option("--study", help="Study name.")] = "edgerob",
    space: Annotated[str, typer.Option(help="Search space: a name (quick = "
                                            "profiles/space-quick.yaml) or a YAML path.")
                     ] = "quick",
    store: StoreOpt = DEFAULT_URL,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the study if it exists "
                                                          "(how fleet workers join one).")
                      ] = False,
    target: Annotated[Optional[str], typer.Option(
        "--target", "-t", help="Local target(s), comma-separated, or auto (default: the "
                               "space's, else cpu).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Sampler seed (default the space's); give "
                                                     "each concurrent worker its own.")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="Pareto plot file (default "
                                                      "STUDY-pareto.png).")] = None,
    workdir: Annotated[Optional[Path], typer.Option(help="Keep each trial's model and "
                                                         "artifacts here (default: deleted).")
                       ] = None,
    heartbeat: Annotated[int, typer.Option(help="Heartbeat interval s (0: off); a dead "
                                                "worker's trial is retried.")] = 60,
):
    """Multi-objective search (Optuna, TPE) over depth, width, precision, batch size,
    adversarial-training eps, defences and target.

    Each trial trains, exports and profiles for real; its measurements go to the store.
    Prints the Pareto front as a table and plots it."""
    import logging

    import optuna

    from edgerob.analysis.optimize import optimize as run_study

    optuna.logging.set_verbosity(logging.ERROR)  # one line per trial below instead
    err.print(f"study {study} in {storage}: running {trials} trial(s)", highlight=False)

    def on_trial(r):
        cfg = _trial_config(r)
        if r["state"] != "COMPLETE":
            err.print(f"trial {r['number']} [red]failed[/] ({cfg}): {r['error'] or r['state']}",
                      highlight=False)
            return
        vals = "  ".join(f"{k} {_fmt(v, '.4g')}" for k, v in r["values"].items())
        mark = "" if r["feasible"] else "  [yellow]infeasible[/] " + ", ".join(
            f"{k} over by {v:.3g}" for k, v in r["constraints"].items() if v > 0)
        err.print(f"trial {r['number']} ({cfg}): {vals}{mark}", highlight=False)

    result = run_study(trials, storage=storage, study_name=study, space=space, store=store,
                       resume=resume, target=target, on_trial=on_trial, seed=seed,
                       workdir=workdir, plot=plot or Path(f"{study}-pareto.png"),
                       heartbeat_interval=heartbeat or None)
    c = result.counts()
    table = Table(title=f"Pareto front of study {result.study_name}: {len(result.front)} of "
                        f"{c['complete'] - c['infeasible']} feasible completed trials")
    table.add_column("trial", justify="right")
    for o in result.objectives:
        table.add_column(f"{o.label} {'↑' if o.direction == 'maximize' else '↓'}",
                         justify="right")
    for col in ("p99 ms", "MiB", "clean acc", "configuration", "run"):
        table.add_column(col, justify="left" if col in ("configuration", "run") else "right")
    for r in result.front:
        table.add_row(str(r["number"]), *[_fmt(r["values"][o.name], ".4g")
                                          for o in result.objectives],
                      _fmt(r.get("latency_p99_ms"), ".3g"), _fmt(r.get("memory_mb"), ".3g"),
                      _fmt(r.get("clean_accuracy"), ".1%"), _trial_config(r),
                      (r.get("run_id") or "—")[:12])
    out.print(table)
    for n in result.notes:
        err.print(f"note: {n}", highlight=False, markup=False)
    constraints = ", ".join(f"{k} <= {v:g}" for k, v in result.constraints.items())
    err.print(f"{c['trials']} trials in the study: {c['complete']} complete ({c['infeasible']} "
              f"infeasible{': ' + constraints if constraints else ''}), {c['failed']} failed"
              + (f", {c['running']} running" if c["running"] else "")
              + f"; plot -> {result.plot}; measurements -> {store}", highlight=False)
    ran = [r for r in result.trials if r["number"] in set(result.ran)]
    if ran and all(r["state"] == "FAIL" for r in ran):
        raise EdgerobError(f"all {len(ran)} trials failed; the first: {ran[0]['error']}")


def _trial_config(r: dict) -> str:
    p = {**r["params"]}
    parts = [f"resnet{p.get('depth', '?')}-w{p.get('width', '?')}", str(p.get("precision", "")),
             f"b{p.get('batch_size', '?')}"]
    if p.get("adversarial"):
        parts.append(f"{p['adversarial']}@{p.get('eps', 0):.3g}")
    if p.get("squeeze_bits"):
        parts.append(f"squeeze{p['squeeze_bits']}")
    for k in ("output_noise", "train_noise"):
        if p.get(k):
            parts.append(f"{k}={p[k]:.3g}")
    if "target" in p:
        parts.append(p["target"])
    return " ".join(parts)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
