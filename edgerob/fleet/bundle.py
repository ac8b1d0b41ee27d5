"""Bundles: the folder a host ships to a device, and the results that come back.

    BUNDLE/
      manifest.json            format, model, target, profile, sha256 of every file below
      target.yaml, profile.yaml
      model/model.json         the card (and model.pt, for the torch runtime)
      artifacts/PRECISION.onnx + PRECISION.json
      inputs/NAME.npz          clean and white-box input sets, crafted on the host
      results/edgerob.db       written on the device (not in the manifest)

A device runs a bundle with numpy, the runtime and the profiler only: nothing here imports torch.
Every file is checked against the manifest before anything runs; a tampered or missing file is
refused by name. `ingest` copies a bundle's results into a store, skipping what it already holds.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import yaml

from edgerob.catalog import load_yaml
from edgerob.catalog.profiles import Profile
from edgerob.catalog.targets import Target
from edgerob.device.artifacts import load_artifact
from edgerob.device.inputs import InputSet
from edgerob.device.sweep import Workload, sweep_precisions
from edgerob.errors import EdgerobError
from edgerob.files import atomic_write_bytes, atomic_write_json, file_sha256
from edgerob.store import ATTACK_KEY, Store, attack_cells, failures, measurements, runs

MANIFEST = "manifest.json"
FORMAT = "edgerob-bundle"
VERSION = 1
RESULTS_DB = "results/edgerob.db"


def results_url(bundle_dir: str | Path) -> str:
    return f"sqlite:///{Path(bundle_dir).resolve() / RESULTS_DB}"


def write_bundle(target, profile, work: Workload, out: str | Path) -> Path:
    """Write a workload prepared on the host (`edgerob.host.workload.prepare_workload`) as a
    bundle in `out`, for `target` (a catalog Target) and `profile` (a catalog Profile)."""
    out = Path(out)
    if out.exists() and any(p.name != "results" for p in out.iterdir()):
        raise EdgerobError(f"bundle folder {out} exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    (out / "model").mkdir(exist_ok=True)
    for path in work.model_files:  # the torch runtime runs the checkpoint itself
        shutil.copyfile(path, out / "model" / Path(path).name)
    for p, art in work.artifacts.items():
        dst = out / "artifacts" / f"{p}.onnx"
        dst.parent.mkdir(exist_ok=True)
        shutil.copyfile(art.path, dst)
        meta = {**asdict(art), "path": f"{p}.onnx", "model_dir": "../model"}
        atomic_write_json(dst.with_suffix(".json"), meta)
    for name, s in work.inputs.items():
        s.save(out / "inputs" / f"{name}.npz")
    target_dump = target.model_dump(mode="json")
    target_dump["host"] = "local"  # on the device the bundle is profiled where it runs
    atomic_write_bytes(out / "target.yaml", yaml.safe_dump(target_dump, sort_keys=False).encode())
    atomic_write_bytes(out / "profile.yaml",
                       yaml.safe_dump(profile.model_dump(mode="json"), sort_keys=False).encode())
    files = {str(p.relative_to(out)): file_sha256(p) for p in sorted(out.rglob("*"))
             if p.is_file() and p.parts[len(out.parts)] != "results"}
    atomic_write_json(out / MANIFEST, {
        "format": FORMAT, "version": VERSION, "model": work.model,
        "model_sha256": work.model_sha256, "target": target.name, "profile": profile.name,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "files": files})
    return out


def read_manifest(bundle_dir: str | Path) -> dict:
    path = Path(bundle_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise EdgerobError(f"{bundle_dir} is not a bundle: no {MANIFEST}") from None
    except (OSError, ValueError) as e:
        raise EdgerobError(f"cannot read {path}: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise EdgerobError(f"{path} is not an edgerob bundle manifest")
    if manifest.get("version") != VERSION:
        raise EdgerobError(f"{path} is bundle version {manifest.get('version')}; this edgerob "
                           f"reads version {VERSION}")
    return manifest


def verify(bundle_dir: str | Path) -> dict:
    """Check every file against the manifest; refuse the first that is missing or changed."""
    root = Path(bundle_dir)
    manifest = read_manifest(root)
    for rel, digest in manifest["files"].items():
        path = root / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise EdgerobError(f"bundle manifest names a file outside the bundle: {rel}")
        if not path.is_file():
            raise EdgerobError(f"bundle file missing: {path}")
        if file_sha256(path) != digest:
            raise EdgerobError(f"bundle file tampered with or corrupt (sha256 mismatch): {path}")
    return manifest


def load_bundle(bundle_dir: str | Path):
    """(target, profile, workload) from a verified bundle, with numpy and pydantic only."""
    root = Path(bundle_dir)
    manifest = verify(root)
    target = load_yaml(root / "target.yaml", Target)
    profile = load_yaml(root / "profile.yaml", Profile)
    artifacts = {p: load_artifact(root / "artifacts" / f"{p}.onnx")
                 for p in sweep_precisions(profile)}
    inputs = {name: InputSet.load(root / "inputs" / f"{name}.npz") for name in profile.input_sets}
    return target, profile, Workload(manifest["model"], manifest["model_sha256"], artifacts,
                                     inputs, load_model=_load_checkpoint)


def _load_checkpoint(folder: Path):
    """The host's checkpoint loader, for the torch runtime on a device that has torch."""
    from edgerob.host.models import load_checkpoint  # imports torch: only this runtime needs it

    return load_checkpoint(folder)


def ingest(source: str | Path, store) -> dict[str, int]:
    """Copy runs, measurements and failure records from a bundle (or a results database) into
    `store`; rows it already holds are skipped. Returns counts of rows added and skipped."""
    source = Path(source)
    db = source / RESULTS_DB if source.is_dir() else source
    if not db.is_file():
        raise EdgerobError(f"no results to ingest: {db} does not exist")
    src = Store(f"sqlite:///{db.resolve()}")
    counts = {"runs": 0, "measurements": 0, "failures": 0, "skipped": 0}
    with src.engine.connect() as c:
        run_rows = [dict(r._mapping) for r in c.execute(runs.select())]
        m_rows = [dict(r._mapping) for r in c.execute(measurements.select())]
        f_rows = [dict(r._mapping) for r in c.execute(failures.select())]
        a_rows = [dict(r._mapping) for r in c.execute(attack_cells.select())]
    for run in run_rows:
        counts["runs"] += store.upsert_run(run)
    for row in m_rows:
        row.pop("id")
        ok = store.add_measurement(row)
        counts["measurements" if ok else "skipped"] += 1
    cells: dict[tuple, list[dict]] = {}
    for row in f_rows:
        row.pop("id")
        cells.setdefault((row["run_id"], *(row[k] for k in ATTACK_KEY)), []).append(row)
    counted = {}  # each query-attack cell's counts go in with its records
    for row in a_rows:
        row.pop("id")
        key = (row["run_id"], *(row[k] for k in ATTACK_KEY))  # a cell per power mode
        counted[key] = row
        cells.setdefault(key, [])
    for key, rows in cells.items():
        if store.add_failures(rows, cell=counted.get(key)):
            counts["failures"] += len(rows)
        else:
            counts["skipped"] += len(rows)
    return counts
