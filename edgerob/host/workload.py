"""Workloads: a model folder turned into what a device sweeps (artifacts plus input sets).

The host side of one pipeline: `prepare_workload` here, then `edgerob.device.sweep.run_profile`
on this machine, or `edgerob.fleet.bundle.write_bundle` to ship it to a device.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgerob.device.inputs import InputSet, input_set_name
from edgerob.device.sweep import Workload, sweep_precisions
from edgerob.errors import EdgerobError
from edgerob.host.attacks import craft
from edgerob.host.data import load_dataset
from edgerob.host.export import export
from edgerob.host.models import CARD_FILE, WEIGHTS_FILE, load_card, load_checkpoint


def prepare_workload(profile, model_dir: str | Path) -> Workload:
    """Export the artifacts and craft the input sets `profile` (a catalog Profile) needs; the
    workload also carries the checkpoint and its loader, for the torch runtime."""
    card = load_card(model_dir)
    artifacts = export(model_dir, precisions=sweep_precisions(profile))
    return Workload(card.name, card.checkpoint_sha256, artifacts, input_sets(profile, model_dir),
                    model_files=[Path(model_dir) / CARD_FILE, Path(model_dir) / WEIGHTS_FILE],
                    load_model=load_checkpoint)


def input_sets(profile, model_dir: str | Path) -> dict:
    """Every input set the profile names, as InputSets. White-box sets are crafted on the fp32
    torch model once and cached in MODEL_DIR/inputs/NAME.npz."""
    card = load_card(model_dir)
    data = load_dataset(card.dataset, card.dataset_root)
    if list(data.input_shape) != list(card.input_shape):
        raise EdgerobError(f"dataset {card.dataset} gives images of shape {data.input_shape}, "
                           f"the model expects {tuple(card.input_shape)}")
    n = min(profile.samples or len(data.x_test), len(data.x_test))
    ids = np.arange(n, dtype=np.int64)
    sets = {"clean": InputSet(name="clean", images=data.x_test[:n], labels=data.y_test[:n],
                              sample_ids=ids, attack=None, eps=0.0, params={})}
    model = None
    for spec in profile.attacks:
        for eps in spec.eps:
            name = input_set_name(spec.attack, eps)
            path = Path(model_dir) / "inputs" / f"{name}.npz"
            wanted = {"precise": spec.precise, "official": spec.official, **spec.params}
            if spec.stop is not None:
                wanted["stop"] = spec.stop.model_dump()
            if path.is_file():
                cached = InputSet.load(path)
                if _same_samples(cached, ids) and cached.params.get("requested") == wanted:
                    sets[name] = cached
                    continue
            if model is None:
                model, _ = load_checkpoint(model_dir)
            crafted = craft(model, sets["clean"].images, sets["clean"].labels, ids, spec.attack,
                            eps, precise=spec.precise, official=spec.official,
                            stop=spec.stop.rule() if spec.stop else None, **spec.params)
            crafted.params["requested"] = wanted
            crafted.save(path)
            sets[name] = crafted
    return sets


def _same_samples(cached, ids: np.ndarray) -> bool:
    """A cached set was crafted on these samples (a sequential set: drawn from them)."""
    seq = cached.params.get("sequential")
    if seq is not None:
        return seq.get("n_available") == len(ids) and set(cached.sample_ids.tolist()) <= set(
            ids.tolist())
    return cached.sample_ids.tolist() == ids.tolist()
