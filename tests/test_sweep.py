import json

import pytest

from edgerob.catalog.profiles import Profile
from edgerob.catalog.targets import load_target
from edgerob.device.sweep import cells, run_profile
from edgerob.errors import EdgerobError
from edgerob.host.workload import prepare_workload
from edgerob.store import Store

from conftest import FAST


def sweep(target, profile, model_dir, store, **kw):
    """The local pipeline as `edgerob profile` runs it: prepare on the host, sweep here."""
    return run_profile(target, profile, prepare_workload(profile, model_dir), store, **kw)


@pytest.fixture
def small_profile():
    return Profile(name="small", precisions=["fp32", "int8"], batch_sizes=[1, 4], timing=FAST)


def test_sweep_writes_every_cell(tiny_model, tiny_artifacts, small_profile, tmp_path):
    store = Store(f"sqlite:///{tmp_path}/s.db")
    seen = []
    res = sweep(load_target("cpu"), small_profile, tiny_model, store,
                on_cell=lambda i, n, c, m: seen.append((i, n, c.precision, m is None)))
    assert res.measured == 4 and res.skipped == 0 and not res.resumed
    assert [s[:2] for s in seen] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert {(r["precision"], r["batch_size"]) for r in res.rows} == {
        ("fp32", 1), ("fp32", 4), ("int8", 1), ("int8", 4)}
    for r in res.rows:
        art = tiny_artifacts[r["precision"]]
        assert r["artifact_sha256"] == art.sha256
        # the deployed artifact's accuracy on the test split is what export's parity saw
        assert r["accuracy"] == pytest.approx(art.parity["accuracy"])
        assert r["latency_p50_ms"] > 0 and r["throughput_sps"] > 0
        assert r["iterations"] >= FAST.min_iterations
        assert r["power_mean_w"] is None and "RAPL" in r["power_note"]  # no sensor here
        fp = json.loads(r["fingerprint"])
        assert fp["precision"] == r["precision"] and fp["runtime"] == "onnxruntime"
        assert fp["artifact_sha256"] == art.sha256 and "onnxruntime" in fp["versions"]
    assert store.runs()[0]["status"] == "done"


def test_rerun_skips_measured_cells(tiny_model, small_profile, tmp_path):
    store = Store(f"sqlite:///{tmp_path}/s.db")
    first = sweep(load_target("cpu"), small_profile, tiny_model, store)
    again = sweep(load_target("cpu"), small_profile, tiny_model, store)
    assert again.run_id == first.run_id and again.resumed
    assert again.measured == 0 and again.skipped == 4
    assert len(store.measurements()) == 4
    bigger = small_profile.model_copy(update={"batch_sizes": [1, 4, 2]})
    grown = sweep(load_target("cpu"), bigger, tiny_model, store)
    assert grown.measured == 2 and len(store.measurements()) == 6
    fresh = sweep(load_target("cpu"), small_profile, tiny_model, store, new_run=True)
    assert fresh.run_id != first.run_id and fresh.measured == 4


def test_interrupted_sweep_leaves_whole_cells_and_resumes(tiny_model, small_profile, tmp_path):
    store = Store(f"sqlite:///{tmp_path}/s.db")

    def interrupt_after_two(i, n, cell, m):
        if i == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweep(load_target("cpu"), small_profile, tiny_model, store,
              on_cell=interrupt_after_two)
    assert len(store.measurements()) == 2
    assert store.runs()[0]["status"] == "failed"
    res = sweep(load_target("cpu"), small_profile, tiny_model, store)
    assert res.resumed and res.measured == 2 and res.skipped == 2
    assert len(store.measurements()) == 4 and store.runs()[0]["status"] == "done"


def test_threads_reach_the_runtime(tiny_model, tmp_path):
    prof = Profile(name="t", precisions=["fp32"], batch_sizes=[1], timing=FAST)
    res = sweep(load_target("cpu"), prof, tiny_model, Store(f"sqlite:///{tmp_path}/s.db"),
                threads=1)
    assert json.loads(res.rows[0]["fingerprint"])["intra_op_threads"] == 1


def test_remote_target_is_refused_here(tiny_model, small_profile, tmp_path):
    remote = load_target("cpu").model_copy(update={"host": "user@jetson"})
    with pytest.raises(EdgerobError, match="user@jetson"):
        sweep(remote, small_profile, tiny_model, Store(f"sqlite:///{tmp_path}/s.db"))


def test_cells_order():
    p = Profile(name="x", precisions=["fp16", "fp32"], batch_sizes=[8, 1])
    assert [(c.precision, c.batch_size) for c in cells(p)] == [
        ("fp16", 8), ("fp16", 1), ("fp32", 8), ("fp32", 1)]


@pytest.fixture
def attack_profile():
    return Profile.model_validate({
        "name": "adv", "precisions": ["fp32", "int8"], "batch_sizes": [1, 4], "samples": 40,
        "timing": FAST, "attacks": [{"attack": "fgsm", "eps": [0.1]}],
        "query_attack": {"eps": [0.2], "budget_queries": 30, "samples": 6,
                         "precisions": ["int8"], "batch_sizes": [4]}})


def test_adversarial_sets_and_failure_records(tiny_model, attack_profile, tmp_path):
    store = Store(f"sqlite:///{tmp_path}/s.db")
    res = sweep(load_target("cpu"), attack_profile, tiny_model, store)
    assert res.measured == 8 + 1
    by_set = {}
    for r in res.rows:
        by_set.setdefault(r["input_set"], []).append(r)
    assert set(by_set) == {"clean", "fgsm@0.1"}
    for r in by_set["clean"]:
        assert r["latency_vs_clean_ratio"] is None and r["n_samples"] == 40
    for r in by_set["fgsm@0.1"]:
        assert r["latency_vs_clean_ratio"] > 0 and 0 <= r["latency_vs_clean_p"] <= 1
        assert (r["latency_vs_clean_low"] <= r["latency_vs_clean_ratio"]
                <= r["latency_vs_clean_high"])
        assert -1 <= r["latency_vs_clean_effect"] <= 1 and r["vs_clean_rounds"] == FAST.rounds
        assert r["vs_clean_method"].startswith("paired rounds")
        assert r["latency_vs_clean_cliffs_delta"] is None  # the unpaired statistic is gone
        assert json.loads(r["fingerprint"])["interleaved_with"] == ["clean"]
        assert len(json.loads(r["rounds"])) == FAST.rounds
    # FGSM at 0.1 hurts the deployed artifacts (the transfer view)
    assert (sum(r["accuracy"] for r in by_set["fgsm@0.1"])
            < sum(r["accuracy"] for r in by_set["clean"]))
    # the samples the int8 artifact gets right on the clean input are attacked, the others
    # counted in the cell's row
    [cell] = res.attack_cells
    assert (cell["precision"], cell["batch_size"], cell["attack"], cell["eps"]) == (
        "int8", 4, "square", 0.2)
    assert cell["n_available"] == 6 and cell["n_attacked"] == len(res.failures) > 0
    assert cell["n_clean_wrong"] + cell["n_attacked"] == 6
    assert {(f["precision"], f["batch_size"], f["attack"], f["eps"]) for f in res.failures} == {
        ("int8", 4, "square", 0.2)}
    ids = [f["sample_id"] for f in res.failures]
    assert ids == sorted(ids) and set(ids) <= set(range(6))
    for f in res.failures:
        assert 0 < f["duration_share_s"] <= f["duration_s"]

    cached = tiny_model / "inputs" / "fgsm@0.1.npz"
    stamp = cached.stat().st_mtime_ns
    again = sweep(load_target("cpu"), attack_profile, tiny_model, store)
    assert again.measured == 0 and again.skipped == 9
    assert cached.stat().st_mtime_ns == stamp  # reused, not crafted again
    assert len(store.failures()) == cell["n_attacked"] and len(store.attack_cells()) == 1
    more = attack_profile.model_copy(update={"samples": 30})
    sweep(load_target("cpu"), more, tiny_model, store, new_run=True)
    assert cached.stat().st_mtime_ns != stamp  # other samples: crafted again


def test_a_cell_with_nothing_attacked_is_stored_and_not_run_again(tiny_model, attack_profile,
                                                                  tmp_path, monkeypatch):
    """Every sample misclassified clean: no failure record, but the cell's row says so, and a
    resumed sweep skips the cell instead of attacking again."""
    import edgerob.device.sweep as sweep
    from edgerob.device.failures import AttackCell

    calls = []

    def nothing_right(rt, images, *args, **kw):
        calls.append(len(images))
        return AttackCell(n_available=len(images), n_clean_wrong=len(images))

    monkeypatch.setattr(sweep, "square_attack", nothing_right)
    prof = attack_profile.model_copy(update={"attacks": [], "precisions": ["int8"],
                                             "batch_sizes": [4]})
    store = Store(f"sqlite:///{tmp_path}/s.db")
    first = run_profile(load_target("cpu"), prof, prepare_workload(prof, tiny_model), store)
    assert calls == [6] and first.failures == []
    assert [(c["n_available"], c["n_clean_wrong"], c["n_attacked"]) for c in store.attack_cells()
            ] == [(6, 6, 0)]
    again = run_profile(load_target("cpu"), prof, prepare_workload(prof, tiny_model), store)
    assert again.resumed and again.skipped == 2 and calls == [6]
    assert len(store.attack_cells()) == 1
