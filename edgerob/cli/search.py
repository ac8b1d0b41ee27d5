"""Architecture and configuration search: arch-score (NTK at initialisation), optimize (Optuna)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from edgerob.cli.common import StoreOpt, csv_list, err, fmt, out, user_errors
from edgerob.errors import EdgerobError
from edgerob.store import DEFAULT_URL

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

    from edgerob.host import ntk  # torch: not on devices

    archs = ntk.parse_archs(csv_list(depths, int), csv_list(widths, int))
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
                          fmt(s["min_eig"], ".4g"), fmt(s["max_eig"], ".4g"),
                          fmt(s["cond"], ".4g"), fmt(s["trace"], ".4g"),
                          fmt(s["logdet"], ".4g"), fmt(r[f"{kind}_s"], ".3f"))
    out.print(table)
    if res is None:
        return
    truth = Table(title=f"measured: {epochs} epochs, standard and {adversarial} at eps {eps:g}")
    for col in ("arch", "width", "std clean", "std robust", "adv clean", "adv robust",
                "train wall s"):
        truth.add_column(col, justify="left" if col == "arch" else "right")
    for r in rows:
        truth.add_row(r["arch"], str(r["width"]), fmt(r["std_clean"], ".1%"),
                      fmt(r["std_robust"], ".1%"), fmt(r["adv_clean"], ".1%"),
                      fmt(r["adv_robust"], ".1%"), fmt(r["std_wall_s"] + r["adv_wall_s"],
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
                         f"{c['spearman']:+.2f} [{fmt(c['spearman_lo'], '+.2f')}, "
                         f"{fmt(c['spearman_hi'], '+.2f')}] / {fmt(c['kendall'], '+.2f')}")
        corr.add_row(key, *cells)
    out.print(corr)
    c = res["compute"]
    out.print(f"compute: scoring {c['score_s']:.1f} s vs training {c['train_wall_s']:.1f} s "
              f"wall ({c['train_s']:.1f} s in-loop): {c['speedup']:.0f}x cheaper, "
              f"{c['saved_fraction']:.1%} saved", highlight=False)


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

    import optuna  # optional heavy dependency (host extra)

    from edgerob.analysis.optimize import optimize as run_study  # torch, optuna (host extra)

    optuna.logging.set_verbosity(logging.ERROR)  # one line per trial below instead
    err.print(f"study {study} in {storage}: running {trials} trial(s)", highlight=False)

    def on_trial(r):
        cfg = _trial_config(r)
        if r["state"] != "COMPLETE":
            err.print(f"trial {r['number']} [red]failed[/] ({cfg}): {r['error'] or r['state']}",
                      highlight=False)
            return
        vals = "  ".join(f"{k} {fmt(v, '.4g')}" for k, v in r["values"].items())
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
        table.add_row(str(r["number"]), *[fmt(r["values"][o.name], ".4g")
                                          for o in result.objectives],
                      fmt(r.get("latency_p99_ms"), ".3g"), fmt(r.get("memory_mb"), ".3g"),
                      fmt(r.get("clean_accuracy"), ".1%"), _trial_config(r),
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
