"""White-box attacks: eps-balls, robust accuracy, precise mode, input sets, bad input."""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchattacks = pytest.importorskip("torchattacks")
from torch import nn  # noqa: E402

from edgerob.host import attacks as A  # noqa: E402
from edgerob.errors import EdgerobError  # noqa: E402


@pytest.fixture(scope="module")
def setup(tiny_model):
    """The tiny digits model and 64 test images; one torch thread (2 are slower on tiny nets)."""
    from edgerob.host.data import load_dataset
    from edgerob.host.models import load_checkpoint

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model, _ = load_checkpoint(tiny_model)
    data = load_dataset("digits")
    yield model, data.x_test[:64], data.y_test[:64], data.x_train[:256]
    torch.set_num_threads(threads)


class Scaled(nn.Module):
    """Logits x 1000: softmax cross-entropy saturates and its float32 gradient is exactly zero."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x) * 1000.0


class Rounded(nn.Module):
    """Rounds the input to 4 levels with a plain torch.round (zero gradient) before the model."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x * 3) / 3)


# --- basics ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_eps_zero_gives_clean_images_and_clean_accuracy(setup, attack):
    model, x, y, _ = setup
    y = y[:32].copy()
    y[:4] = (y[:4] + 1) % 10  # four wrong labels: clean accuracy is below 1
    r = A.evaluate(model, x[:32], y, attack=attack, eps=0.0)
    with torch.no_grad():
        pred = model(torch.from_numpy(x[:32])).argmax(1).numpy()
    assert r.clean_accuracy == pytest.approx(np.mean(pred == y)) and r.clean_accuracy < 0.9
    assert r.robust_accuracy == r.clean_accuracy
    assert np.array_equal(r.adversarial, x[:32])
    assert r.crafting_time_s == 0.0
    assert np.array_equal(r.robust_correct, r.clean_correct)
    # and the same call at eps > 0 does attack
    assert A.evaluate(model, x[:32], y, attack=attack, eps=0.1).robust_accuracy < r.clean_accuracy


def test_robust_accuracy_does_not_increase_with_eps(setup):
    model, x, y, _ = setup
    accs = [A.evaluate(model, x, y, "pgd", eps).robust_accuracy
            for eps in (0.0, 0.02, 0.05, 0.1, 0.2, 0.3)]
    assert all(a >= b for a, b in zip(accs, accs[1:])), accs
    assert accs[0] > 0.9 and accs[-1] < accs[0] - 0.5, accs


SMALL_BUDGETS = {"fgsm": {}, "pgd": {"steps": 5}, "apgd": {"steps": 5}, "cw": {"steps": 10},
                 "deepfool": {"steps": 3}, "square": {"n_queries": 50},
                 "autoattack": {"steps": 3, "n_queries": 50}}


def test_every_attack_has_a_small_budget_here():
    assert set(SMALL_BUDGETS) == set(A.ATTACKS)


@pytest.mark.parametrize("attack", A.ATTACKS)
def test_crafted_images_stay_in_eps_ball_and_unit_box(setup, attack):
    model, x, y, _ = setup
    n = 8 if attack in ("deepfool", "autoattack") else 16
    eps = 0.1
    r = A.evaluate(model, x[:n], y[:n], attack=attack, eps=eps, **SMALL_BUDGETS[attack])
    adv = r.adversarial
    assert adv.shape == x[:n].shape and adv.dtype == np.float32
    assert np.abs(adv - x[:n]).max() <= eps + 1e-6
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    assert np.abs(adv - x[:n]).max() > 0  # it did perturb
    assert r.robust_accuracy <= r.clean_accuracy
    assert r.params["norm"] == "Linf"


@pytest.mark.parametrize("attack,params", [("cw", {"steps": 10}), ("deepfool", {"steps": 3})])
def test_unbounded_attacks_are_projected_into_the_ball(setup, attack, params):
    model, x, y, _ = setup
    eps = 0.005
    xt, yt = torch.from_numpy(x[:8]), torch.from_numpy(y[:8])
    atk = A.make_attack(model, attack, eps, **params)
    raw = atk.torchattack(xt, yt)  # torchattacks alone leaves the ball
    assert (raw - xt).abs().max() > eps + 1e-3
    ours = atk(xt, yt)
    assert not model.training  # CW's logit wrapper must not leave the model in train mode
    assert (ours - xt).abs().max() <= eps + 1e-6
    assert "projected" in atk.params


def test_robust_requires_clean_correct():
    """A model that is wrong exactly at the clean images and right anywhere else: the random
    start makes every adversarial image 'correct', yet no sample is robust."""

    class WrongOnlyAtClean(nn.Module):
        def __init__(self, ref):
            super().__init__()
            self.register_buffer("ref", ref)
            self.scale = nn.Parameter(torch.tensor(1000.0))

        def forward(self, x):
            dist = (x - self.ref[: len(x)]).abs().flatten(1).sum(1)
            return torch.stack([torch.zeros_like(dist), self.scale * dist - 0.5], 1)

    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 0.8, size=(8, 1, 4, 4)).astype(np.float32)
    y = np.ones(8, dtype=np.int64)
    model = WrongOnlyAtClean(torch.from_numpy(x))
    r = A.evaluate(model, x, y, "pgd", 0.1)
    with torch.no_grad():
        adv_pred = model(torch.from_numpy(r.adversarial)).argmax(1).numpy()
    assert (adv_pred == y).all()  # correct on every adversarial image...
    assert r.clean_accuracy == 0.0 and r.robust_accuracy == 0.0  # ...but robust on none
    assert not r.robust_correct.any()


def test_same_seed_same_images_and_caller_rng_untouched(setup):
    model, x, y, _ = setup
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = A.evaluate(model, x[:16], y[:16], "pgd", 0.05, seed=7)
    assert torch.equal(torch.rand(3), expected)  # evaluate restored the caller's generator
    b = A.evaluate(model, x[:16], y[:16], "pgd", 0.05, seed=7)
    c = A.evaluate(model, x[:16], y[:16], "pgd", 0.05, seed=8)
    assert np.array_equal(a.adversarial, b.adversarial)
    assert not np.array_equal(a.adversarial, c.adversarial)  # the seed drives the random start
    sq1 = A.evaluate(model, x[:8], y[:8], "square", 0.05, seed=3, n_queries=30)
    sq2 = A.evaluate(model, x[:8], y[:8], "square", 0.05, seed=3, n_queries=30)
    assert np.array_equal(sq1.adversarial, sq2.adversarial)


def test_model_modes_are_restored(setup):
    model, x, y, _ = setup
    wrapper = Scaled(model)  # a training-mode wrapper around an eval-mode model
    assert wrapper.training and not model.training
    A.evaluate(wrapper, x[:4], y[:4], "fgsm", 0.1)
    assert wrapper.training and not model.training
    assert not any(m.training for m in model.modules())


# --- AutoAttack strength ----------------------------------------------------------------------

def test_official_autoattack_uses_official_budget(setup):
    model, x, y, _ = setup
    atk = A.make_attack(model, "autoattack", 8 / 255, official=True, n_classes=10)
    assert atk.strength == "official"
    parts = atk.torchattack.attacks
    assert [type(p).__name__ for p in parts] == ["APGD", "APGDT", "FAB", "Square"]
    assert [p.steps for p in parts[:3]] == [100, 100, 100]
    assert parts[3].n_queries == 5000
    assert parts[0].loss == "ce"
    assert parts[1].n_target_classes == 9 and parts[2].n_target_classes == 9
    assert parts[2].multi_targeted
    assert all(p.eps == pytest.approx(8 / 255) for p in parts)

    assert parts[3].rescale_schedule is False and parts[3].p_init == 0.8  # official schedule
    assert parts[3].loss == "margin" and parts[3].n_restarts == 1
    # the schedule as written for 10,000 queries: at query 300 of 5000, p_init / 8 (rescaled, the
    # iteration would count as 600 and give p_init / 16)
    assert parts[3].p_selection(300) == pytest.approx(0.8 / 8)
    assert atk.params["n_target_classes"] == 9 and "differs_from_official" not in atk.params

    default = A.make_attack(model, "autoattack", 8 / 255, n_classes=10)
    assert isinstance(default.torchattack, torchattacks.AutoAttack)
    assert default.strength == "torchattacks-default"
    assert [p.steps for p in default.torchattack._autoattack.attacks[:3]] == [10, 10, 10]

    r = A.evaluate(model, x[:4], y[:4], "autoattack", 0.3, official=True)
    assert r.strength == "official" and r.params["steps"] == 100
    assert A.craft(model, x[:4], y[:4], np.arange(4), "autoattack", 0.3,
                   steps=3, n_queries=20).strength == "custom"
    with pytest.raises(EdgerobError, match="official"):
        A.make_attack(model, "autoattack", 0.1, official=True, steps=5)
    with pytest.raises(EdgerobError, match="autoattack only"):
        A.make_attack(model, "pgd", 0.1, official=True)


@pytest.mark.parametrize("n_classes, targets", [(100, 9), (10, 9), (5, 4)])
def test_official_autoattack_targets_nine_classes_whatever_the_data_set(setup, n_classes,
                                                                          targets):
    """9 target classes (the official number) for 100 classes too; n_classes - 1 below 10, and
    the set's params say so."""
    model = setup[0]
    atk = A.make_attack(model, "autoattack", 8 / 255, official=True, n_classes=n_classes)
    apgdt, fab = atk.torchattack.attacks[1:3]
    assert apgdt.n_target_classes == fab.n_target_classes == targets
    assert atk.params["n_target_classes"] == targets and atk.params["n_classes"] == n_classes
    assert atk.params["square"] == {"p_init": 0.8, "resc_schedule": False}
    if targets < 9:
        assert "4 target classes, not the official 9" in atk.params["differs_from_official"]
    else:
        assert "differs_from_official" not in atk.params


# --- precise mode and gradient masking ----------------------------------------------------------

@pytest.mark.parametrize("wrapper", [Scaled, Rounded])
def test_precise_mode_sees_through_gradient_masking(setup, wrapper):
    model, x, y, _ = setup
    masked = wrapper(model).eval()
    naive = A.evaluate(masked, x, y, "pgd", 0.1)
    precise = A.evaluate(masked, x, y, "pgd", 0.1, precise=True)
    assert naive.clean_accuracy > 0.9
    assert naive.robust_accuracy >= precise.robust_accuracy + 0.2
    assert precise.naive_robust_accuracy == pytest.approx(naive.robust_accuracy)
    assert any("gradient masking" in w for w in precise.warnings), precise.warnings
    assert np.abs(precise.adversarial - x).max() <= 0.1 + 1e-6
    assert precise.adversarial.min() >= 0 and precise.adversarial.max() <= 1
    assert not (precise.robust_correct & ~naive.robust_correct).any()
    white_box = sum(v for k, v in precise.compensations.items() if not k.startswith("square"))
    assert white_box >= 0.2 * len(x)  # the gradient compensations (BPDA, margin) did the work
    with torch.no_grad():  # the reported robust accuracy is the exact forward's verdict
        pred = masked(torch.from_numpy(precise.adversarial)).argmax(1).numpy()
    assert precise.robust_accuracy == pytest.approx(np.mean(precise.clean_correct & (pred == y)))
    if wrapper is Rounded:
        assert any("torch.round" in w for w in precise.warnings)


def test_precise_mode_quiet_on_an_unmasked_model(setup):
    model, x, y, _ = setup
    r = A.evaluate(model, x[:32], y[:32], "pgd", 0.03, precise=True)
    assert not any("gradient masking" in w for w in r.warnings), r.warnings
    assert r.robust_accuracy <= r.naive_robust_accuracy
    assert r.params["precise"]["temperature"] == 100.0


def test_probability_outputs_are_flagged(setup):
    model, x, y, _ = setup
    r = A.evaluate(nn.Sequential(model, nn.Softmax(dim=1)), x[:8], y[:8], "fgsm", 0.05)
    assert any("probabilities" in w for w in r.warnings)
    assert not A.evaluate(model, x[:8], y[:8], "fgsm", 0.05).warnings


def test_bpda_is_exact_forward_straight_through_backward():
    x = torch.linspace(0, 1, 11).requires_grad_(True)
    plain = torch.round(x * 3) / 3
    assert torch.autograd.grad(plain.sum(), x)[0].abs().max() == 0  # masked
    with A.bpda() as seen:
        ste = torch.round(x * 3) / 3
        ste_method = (x * 3).round() / 3
    assert torch.equal(ste, plain) and torch.equal(ste_method, plain)
    assert torch.allclose(torch.autograd.grad(ste.sum(), x)[0], torch.ones(11))
    assert {"torch.round", "Tensor.round"} <= seen


def test_bpda_straight_through_for_flagged_modules():
    class NumpySnap(nn.Module):
        """Rounds through numpy: torch cannot differentiate it at all."""

        non_differentiable = True

        def forward(self, x):
            return torch.from_numpy(np.round(x.detach().numpy() * 3) / 3).float()

    model = nn.Sequential(NumpySnap(), nn.Flatten(), nn.Linear(4, 1))
    x = torch.rand(2, 4).requires_grad_(True)
    assert torch.autograd.grad(model(x).sum(), x, allow_unused=True)[0] is None  # no path
    with A.bpda(model) as seen:
        out = model(x)
    assert torch.equal(out, model(x))
    g = torch.autograd.grad(out.sum(), x)[0]
    assert torch.allclose(g, model[2].weight.detach().expand(2, 4))  # identity through the snap
    assert "NumpySnap" in seen
    assert not model[0]._forward_hooks  # hooks removed on exit


def test_fake_quant_matches_int8_arithmetic_and_bpda_reaches_through_it():
    fq = A.FakeQuant(0.1)
    x = torch.tensor([-20.0, -0.26, 0.04, 0.05, 0.151, 3.0], requires_grad=True)
    expected = torch.tensor([-12.8, -0.3, 0.0, 0.0, 0.2, 3.0])  # clamped at -128 * 0.1
    assert torch.allclose(fq(x), expected)
    assert torch.autograd.grad(fq(x).sum(), x)[0].abs().max() == 0
    with A.bpda(fq):
        y = fq(x)
    assert torch.equal(y, fq(x))
    assert torch.equal(torch.autograd.grad(y.sum(), x)[0], torch.tensor([0.0, 1, 1, 1, 1, 1]))


def test_fake_quant_int8_model_is_masked_and_precise_breaks_it(setup):
    model, x, y, calib = setup
    q = A.fake_quant_int8(model, calib)
    with torch.no_grad():
        agree = (q(torch.from_numpy(x)).argmax(1) == model(torch.from_numpy(x)).argmax(1))
    assert agree.float().mean() >= 0.95
    assert sum(isinstance(m, A.FakeQuant) for m in q.modules()) >= 5
    assert not any(isinstance(m, A.FakeQuant) for m in model.modules())  # original untouched
    naive = A.evaluate(q, x[:32], y[:32], "pgd", 0.05)
    precise = A.evaluate(q, x[:32], y[:32], "pgd", 0.05, precise=True)
    assert naive.robust_accuracy >= precise.robust_accuracy + 0.2
    assert any("torch.round" in w for w in precise.warnings)


# --- input sets -----------------------------------------------------------------------------------

def test_input_set_round_trip(setup, tmp_path):
    model, x, y, _ = setup
    ids = np.arange(100, 116)
    s = A.craft(model, x[:16], y[:16], ids, "pgd", 0.1, steps=5)
    assert s.name == "pgd@0.1" == A.input_set_name("pgd", 0.1)
    assert s.attack == "pgd" and s.eps == 0.1 and s.strength == "custom"
    assert s.crafting_time_s > 0 and s.clean_accuracy > s.robust_accuracy
    assert s.params["steps"] == 5 and s.params["seed"] == 0
    path = s.save(tmp_path / "sets" / "pgd@0.1.npz")
    assert [p.name for p in path.parent.iterdir()] == ["pgd@0.1.npz"]  # no temp file left
    with np.load(path, allow_pickle=False) as npz:
        assert set(npz.files) == {"images", "labels", "sample_ids", "meta"}
    loaded = A.InputSet.load(path)
    for f in dataclasses.fields(A.InputSet):
        a, b = getattr(s, f.name), getattr(loaded, f.name)
        if isinstance(a, np.ndarray):
            assert a.dtype == b.dtype and np.array_equal(a, b), f.name
        else:
            assert a == b, f.name
    assert loaded.images.dtype == np.float32 and loaded.sample_ids.dtype == np.int64
    clean = A.InputSet.clean(x[:4], y[:4], np.arange(4), clean_accuracy=1.0)
    again = A.InputSet.load(clean.save(tmp_path / "clean.npz"))
    assert again.name == "clean" and again.attack is None and again.eps == 0.0


def test_input_set_loads_without_torch(setup, tmp_path):
    _, x, y, _ = setup
    path = A.InputSet.clean(x[:4], y[:4], np.arange(4)).save(tmp_path / "clean.npz")
    code = ("import sys; sys.modules['torch'] = None; sys.modules['torchattacks'] = None\n"
            "from edgerob.device.inputs import InputSet, input_set_name\n"
            f"s = InputSet.load({str(path)!r}); assert len(s) == 4 and s.name == 'clean'\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_input_set_bad_files(setup, tmp_path):
    _, x, y, _ = setup
    good = A.InputSet.clean(x[:4], y[:4], np.arange(4)).save(tmp_path / "good.npz")
    data = good.read_bytes()
    cases = {
        "missing.npz": None,
        "garbage.npz": b"this is not a zip file",
        "truncated.npz": data[: len(data) // 2],
        "no_meta.npz": _npz_bytes(images=x[:4], labels=y[:4], sample_ids=np.arange(4)),
        "pickled.npz": _npz_bytes(images=x[:4], labels=y[:4], sample_ids=np.arange(4),
                                  meta=np.array([{"a": 1}], dtype=object)),
        "bad_json.npz": _npz_bytes(images=x[:4], labels=y[:4], sample_ids=np.arange(4),
                                   meta=np.array("{not json")),
        "short_labels.npz": _npz_bytes(images=x[:4], labels=y[:3], sample_ids=np.arange(4),
                                       meta=np.array('{"format": "edgerob-input-set", '
                                                     '"version": 1, "name": "clean", '
                                                     '"attack": null, "eps": 0, "params": {}, '
                                                     '"crafting_time_s": null, '
                                                     '"clean_accuracy": null, '
                                                     '"robust_accuracy": null, '
                                                     '"strength": null}')),
    }
    for name, content in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        with pytest.raises(EdgerobError):
            A.InputSet.load(tmp_path / name)
    with zipfile.ZipFile(good) as z:  # sanity: the good file is a plain npz
        assert sorted(z.namelist()) == ["images.npy", "labels.npy", "meta.npy",
                                        "sample_ids.npy"]


# --- bad input ------------------------------------------------------------------------------------

def test_bad_input_raises_edgerob_error(setup):
    model, x, y, _ = setup
    xs, ys = x[:4], y[:4]
    bad_calls = {
        "unknown attack": lambda: A.evaluate(model, xs, ys, "bim", 0.1),
        "eps < 0": lambda: A.evaluate(model, xs, ys, "pgd", -0.01),
        "eps > 1": lambda: A.evaluate(model, xs, ys, "pgd", 1.5),
        "eps nan": lambda: A.evaluate(model, xs, ys, "pgd", float("nan")),
        "images > 1": lambda: A.evaluate(model, xs * 255, ys, "pgd", 0.1),
        "images < 0": lambda: A.evaluate(model, xs - 0.5, ys, "pgd", 0.1),
        "images 3-d": lambda: A.evaluate(model, xs[:, 0], ys, "pgd", 0.1),
        "integer images": lambda: A.evaluate(model, (xs * 255).astype(np.uint8), ys, "pgd", 0.1),
        "labels too short": lambda: A.evaluate(model, xs, ys[:3], "pgd", 0.1),
        "float labels": lambda: A.evaluate(model, xs, ys.astype(np.float32), "pgd", 0.1),
        "label out of range": lambda: A.evaluate(model, xs, ys + 10, "pgd", 0.1),
        "unknown param": lambda: A.evaluate(model, xs, ys, "pgd", 0.1, iterations=3),
        "bad steps": lambda: A.evaluate(model, xs, ys, "pgd", 0.1, steps=0),
        "bad batch size": lambda: A.evaluate(model, xs, ys, "pgd", 0.1, batch_size=0),
        "bad precise": lambda: A.evaluate(model, xs, ys, "pgd", 0.1,
                                          precise=A.PreciseConfig(temperature=0)),
        "make_attack unknown": lambda: A.make_attack(model, "nope", 0.1),
        "make_attack eps": lambda: A.make_attack(model, "fgsm", 2.0),
        "craft ids": lambda: A.craft(model, xs, ys, np.arange(3), "pgd", 0.1),
    }
    for what, call in bad_calls.items():
        with pytest.raises(EdgerobError) as info:
            call()
        assert "\n" not in str(info.value), what


def test_input_set_name():
    assert A.input_set_name("pgd", 0.1) == "pgd@0.1"
    assert A.input_set_name("fgsm", 8 / 255) == "fgsm@0.0313725"
    assert A.input_set_name(None, 0) == "clean"


# --- position-dependent models (the output-noise defence) ---------------------------------------

def _row_noise_model():
    """Logits 0 for every image plus a noise pattern by batch row: row 0 favours class 1, row 1
    class 0. Only the row decides the answer; no perturbation changes it."""
    from edgerob.host.models import OutputNoise

    linear = nn.Linear(4, 2)
    nn.init.zeros_(linear.weight), nn.init.zeros_(linear.bias)
    noise = OutputNoise(1.0, 0, 2, rows=2)
    noise.noise.copy_(torch.tensor([[0.0, 10.0], [10.0, 0.0]]))
    return nn.Sequential(nn.Flatten(), linear, noise).eval()


def test_precise_mode_reports_no_compensation_made_by_a_row_change():
    """Sample 0 (row 0) is misclassified clean; sample 1 (row 1) is robust: the row decides. The
    compensations attack the survivors as a sub-batch, where sample 1 sat at row 0 and "failed";
    evaluated at its own row it cannot fail."""
    model = _row_noise_model()
    assert A.position_dependent(model) and not A.position_dependent(nn.Linear(2, 2))
    x = torch.rand(2, 1, 2, 2, generator=torch.Generator().manual_seed(0)).numpy()
    y = np.array([0, 0])
    r = A.evaluate(model, x, y, "pgd", 0.1, precise=A.PreciseConfig(square_queries=20))
    assert r.clean_correct.tolist() == [False, True]
    assert r.robust_correct.tolist() == [False, True] and r.robust_accuracy == 0.5
    assert r.naive_robust_accuracy == r.robust_accuracy
    assert sum(r.compensations.values()) == 0, r.compensations
    assert r.params["position_dependent"] is True
    assert any("own row" in w for w in r.warnings), r.warnings
    assert not any("sub-batch" in w for w in r.warnings)  # nothing needed discarding


def test_forward_at_puts_each_sample_at_its_row():
    model = _row_noise_model()
    x = torch.rand(3, 1, 2, 2)
    z = A._forward_at(model, x[1:2], torch.tensor([1]))
    assert torch.equal(z, model(x)[1:2])  # as in the full batch, not at row 0
    assert not torch.equal(model(x[1:2]), model(x)[1:2])
    xg = x.clone().requires_grad_(True)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    out = A._forward_at(lin, xg[[2, 0]], torch.tensor([3, 1]))
    assert torch.allclose(out, lin(x[[2, 0]]))
    g = torch.autograd.grad(out[:, 0].sum(), xg)[0]
    assert torch.allclose(g[0].flatten(), lin[1].weight[0]) and g[1].abs().max() == 0


def test_precise_mode_on_output_noise_counts_what_the_full_batch_confirms(setup):
    """A real model with the output-noise defence (and masked gradients): the compensations
    reported add up exactly to the accuracy they took away."""
    from edgerob.host.models import OutputNoise

    model, x, y, _ = setup
    noisy = nn.Sequential(Scaled(model), OutputNoise(2000.0, 3, 10)).eval()
    r = A.evaluate(noisy, x[:24], y[:24], "pgd", 0.1, batch_size=12,
                   precise=A.PreciseConfig(restarts=0, square_queries=30))
    broken = round((r.naive_robust_accuracy - r.robust_accuracy) * 24)
    assert broken > 0 and sum(r.compensations.values()) == broken, r.compensations


def test_card_records_the_training_sample_count(tiny_model):
    """TRASH divides the train time by the samples trained on: the card records that count."""
    from edgerob.host.data import load_dataset
    from edgerob.host.models import load_card
    from edgerob.host.train import TrainConfig, _split

    card = load_card(tiny_model)
    data = load_dataset(card.dataset)
    n = len(_split(data, TrainConfig(**card.train))[0])
    assert card.n_train_samples == n and 0 < n <= len(data.x_train)
