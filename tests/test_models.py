"""Tests for edgerob.host.models: architecture names, ResNet shapes, Normalize, checkpoints and cards."""

from __future__ import annotations

import json
import os
import pickle
import shlex
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from torch import nn

from edgerob.errors import EdgerobError
from edgerob.files import file_sha256
from edgerob.host.models import (
    CARD_FILE,
    WEIGHTS_FILE,
    BasicBlock,
    Bottleneck,
    ModelCard,
    Normalize,
    ResNet,
    build_model,
    default_width,
    load_card,
    load_checkpoint,
    parse_arch,
    save_checkpoint,
)



@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These models are tiny: intra-op threading costs far more than it saves (seconds per
    forward on a small shared CPU), so run single-threaded and restore the setting after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(before)


class Evil:
    """Unpickling this runs a shell command."""

    def __init__(self, cmd: str):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def make_card(arch: str = "resnet8", width: int = 4, shape=(1, 16, 16), **kw) -> ModelCard:
    c = shape[0]
    fields = dict(arch=arch, depth=parse_arch(arch), width=width, in_channels=c, num_classes=10,
                  input_shape=list(shape), dataset="digits", mean=[0.3] * c, std=[0.4] * c,
                  class_names=[str(i) for i in range(10)], accuracy=0.9)
    fields.update(kw)
    return ModelCard(**fields)


def randomise_bn(model: nn.Module) -> None:
    """Give BatchNorm buffers non-default values so a round trip must carry them."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


# --- parse_arch ------------------------------------------------------------------------------

@pytest.mark.parametrize("arch,depth", [("resnet8", 8), ("resnet14", 14), ("resnet20", 20),
                                        ("resnet32", 32), ("resnet56", 56), ("resnet110", 110),
                                        ("resnet18", 18), ("resnet34", 34), ("resnet50", 50),
                                        ("ResNet20", 20), ("resnet152", 152)])
def test_parse_arch_valid(arch, depth):
    assert parse_arch(arch) == depth


@pytest.mark.parametrize("arch", ["resnet9", "vgg16", "resnet", "resnet2", "resnet-4",
                                  "resnet101", "resnet100", "20", "resnetX", "resnet8.0", ""])
def test_parse_arch_invalid(arch):
    with pytest.raises(EdgerobError, match="unknown architecture") as err:
        parse_arch(arch)
    assert repr(arch) in str(err.value)
    assert "resnet18/34/50" in str(err.value)


def test_default_width():
    assert default_width(20) == 16
    assert default_width(8) == 16
    assert default_width(18) == 64
    assert default_width(50) == 64


# --- forward shapes --------------------------------------------------------------------------

def resnet(depth, width=4, c=3, classes=10, size=32):
    return ResNet(depth, width, c, classes, size, [0.5] * c, [0.25] * c).eval()


@pytest.mark.parametrize("depth", [8, 20])
@pytest.mark.parametrize("shape", [(2, 1, 16, 16), (2, 3, 32, 32)])
def test_cifar_forward_shapes(depth, shape):
    n, c, h, _ = shape
    model = resnet(depth, width=4, c=c, classes=7, size=h)
    with torch.no_grad():
        out = model(torch.rand(shape))
    assert out.shape == (n, 7)
    assert torch.isfinite(out).all()
    assert model.fc.in_features == 4 * 4  # three stages at w, 2w, 4w
    assert model.stem[0].kernel_size == (3, 3) and model.stem[0].stride == (1, 1)


@pytest.mark.parametrize("depth,blocks,block_type,expansion", [(18, 8, BasicBlock, 1),
                                                               (34, 16, BasicBlock, 1),
                                                               (50, 16, Bottleneck, 4)])
def test_imagenet_resnets_small_input(depth, blocks, block_type, expansion):
    model = resnet(depth, width=4, c=3, classes=10, size=32)
    assert sum(isinstance(m, block_type) for m in model.modules()) == blocks
    # small images get the 3x3 stride-1 stem and no max-pool
    assert model.stem[0].kernel_size == (3, 3) and model.stem[0].stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.stem)
    assert model.fc.in_features == 4 * 8 * expansion  # four stages at w..8w
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
        assert model(torch.rand(1, 3, 16, 16)).shape == (1, 10)


@pytest.mark.parametrize("depth", [18, 50])
def test_imagenet_resnets_64px_use_imagenet_stem(depth):
    model = resnet(depth, width=4, c=3, classes=5, size=64)
    conv = model.stem[0]
    assert conv.kernel_size == (7, 7) and conv.stride == (2, 2)
    assert any(isinstance(m, nn.MaxPool2d) for m in model.stem)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert model.stem(model.normalize(x)).shape == (2, 4, 16, 16)  # /2 conv, /2 pool
        assert model(x).shape == (2, 5)


@pytest.mark.parametrize("n", [1, 2, 3, 9])
def test_cifar_block_count_is_3n(n):
    depth = 6 * n + 2
    model = resnet(depth, width=2, c=1, size=16)
    assert sum(isinstance(m, BasicBlock) for m in model.modules()) == 3 * n
    assert not any(isinstance(m, Bottleneck) for m in model.modules())
    # conv layers: stem + 2 per block + 1x1 shortcut at the two stage transitions
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert convs == 1 + 2 * 3 * n + 2


def test_build_model_uses_card():
    card = make_card("resnet14", width=4, shape=(3, 32, 32), num_classes=4,
                     mean=[0.1, 0.2, 0.3], std=[0.5, 0.6, 0.7])
    model = build_model(card)
    assert sum(isinstance(m, BasicBlock) for m in model.modules()) == 6
    assert model.stem[0].in_channels == 3
    assert model.fc.out_features == 4
    assert model.normalize.mean.flatten().tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert model.normalize.std.flatten().tolist() == pytest.approx([0.5, 0.6, 0.7])


# --- Normalize -------------------------------------------------------------------------------

def test_normalize_applies_mean_std_per_channel():
    mean, std = [0.1, 0.5, 0.9], [0.2, 0.25, 0.5]
    norm = Normalize(mean, std)
    x = torch.rand(2, 3, 4, 5)
    expected = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(norm(x), expected)
    # hand-checked value
    x = torch.full((1, 3, 1, 1), 0.5)
    assert norm(x).flatten().tolist() == pytest.approx([2.0, 0.0, -0.8])
    # the statistics are buffers, so they travel in the state_dict
    assert set(norm.state_dict()) == {"mean", "std"}
    assert list(norm.parameters()) == []


def test_model_normalises_its_input_first():
    mean, std = [0.3, 0.4, 0.5], [0.2, 0.3, 0.4]
    a = ResNet(8, 4, 3, 10, 32, mean, std).eval()
    b = ResNet(8, 4, 3, 10, 32, [0.0] * 3, [1.0] * 3).eval()
    state = a.state_dict()
    state["normalize.mean"] = torch.zeros(1, 3, 1, 1)
    state["normalize.std"] = torch.ones(1, 3, 1, 1)
    b.load_state_dict(state)
    x = torch.rand(2, 3, 32, 32)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b((x - m) / s), rtol=1e-4, atol=1e-5)


# --- checkpoints -----------------------------------------------------------------------------

@pytest.fixture
def saved(tmp_path):
    card = make_card()
    model = build_model(card).eval()
    randomise_bn(model)
    directory = save_checkpoint(model, card, tmp_path / "ckpt")
    return model, card, directory


def test_checkpoint_round_trip(saved):
    model, card, directory = saved
    assert (directory / WEIGHTS_FILE).is_file() and (directory / CARD_FILE).is_file()
    loaded, loaded_card = load_checkpoint(directory)
    assert not loaded.training
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    fresh = build_model(card).eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(x), model(x))  # the weights came from the file
    assert asdict(loaded_card) == asdict(card)


def test_checkpoint_card_fields(saved):
    model, card, directory = saved
    sha = card.checkpoint_sha256
    assert isinstance(sha, str) and len(sha) == 64
    assert all(ch in "0123456789abcdef" for ch in sha)
    assert sha == file_sha256(directory / WEIGHTS_FILE)
    assert card.parameters == sum(p.numel() for p in model.parameters())
    assert card.parameters > 0
    assert card.torch_version == torch.__version__
    raw = json.loads((directory / CARD_FILE).read_text())
    assert raw["checkpoint_sha256"] == sha
    assert raw["parameters"] == card.parameters
    assert raw["input_shape"] == [1, 16, 16]
    assert raw["arch"] == "resnet8" and raw["depth"] == 8 and raw["width"] == 4
    assert raw["mean"] == [0.3] and raw["std"] == [0.4]
    assert load_card(directory).input_shape == [1, 16, 16]
    assert load_card(directory).name == "resnet8-w4-digits"


def test_checkpoint_weights_are_a_plain_state_dict(saved):
    model, _, directory = saved
    state = torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    assert set(state) == set(model.state_dict())
    assert "normalize.mean" in state


def test_checkpoint_3_channel_resnet18(tmp_path):
    card = make_card("resnet18", width=4, shape=(3, 32, 32))
    model = build_model(card).eval()
    save_checkpoint(model, card, tmp_path)
    loaded, loaded_card = load_checkpoint(tmp_path)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert loaded_card.input_shape == [3, 32, 32]


def test_corrupted_weights_detected(saved):
    _, _, directory = saved
    weights = directory / WEIGHTS_FILE
    blob = bytearray(weights.read_bytes())
    for i in range(len(blob) // 2, len(blob) // 2 + 16):
        blob[i] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(EdgerobError, match="sha256"):
        load_checkpoint(directory)


def _swap_weights(directory: Path, data: bytes) -> None:
    (directory / WEIGHTS_FILE).write_bytes(data)
    card = json.loads((directory / CARD_FILE).read_text())
    card["checkpoint_sha256"] = file_sha256(directory / WEIGHTS_FILE)
    (directory / CARD_FILE).write_text(json.dumps(card))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("fmt", ["raw-pickle", "torch-save"])
def test_malicious_weights_with_matching_sha_refused(saved, tmp_path, fmt):
    _, _, directory = saved
    marker = tmp_path / "pwned"
    evil = Evil(f"echo pwned > {shlex.quote(str(marker))}")
    if fmt == "raw-pickle":
        data = pickle.dumps(evil)
    else:
        import io

        buf = io.BytesIO()
        torch.save({"conv.weight": evil}, buf)
        data = buf.getvalue()
    _swap_weights(directory, data)
    with pytest.raises(EdgerobError, match="cannot load"):
        load_checkpoint(directory)
    assert not marker.exists(), "loading the checkpoint ran the embedded command"


def test_weights_for_another_architecture_refused(saved, tmp_path):
    _, _, directory = saved
    other = make_card("resnet14")
    other_dir = save_checkpoint(build_model(other), other, tmp_path / "other")
    _swap_weights(directory, (other_dir / WEIGHTS_FILE).read_bytes())
    with pytest.raises(EdgerobError, match="cannot load"):
        load_checkpoint(directory)


def test_missing_card(tmp_path):
    (tmp_path / WEIGHTS_FILE).write_bytes(b"x")
    with pytest.raises(EdgerobError, match=CARD_FILE):
        load_checkpoint(tmp_path)
    with pytest.raises(EdgerobError, match="not a model folder"):
        load_card(tmp_path / "nowhere")


def test_missing_weights(saved):
    _, _, directory = saved
    (directory / WEIGHTS_FILE).unlink()
    with pytest.raises(EdgerobError, match=WEIGHTS_FILE):
        load_checkpoint(directory)


@pytest.mark.parametrize("text", ["{not json", "", "[1, 2]", '{"arch": "resnet8"}',
                                  '{"arch": "resnet8", "bogus_field": 1}'])
def test_invalid_card(saved, text):
    _, _, directory = saved
    (directory / CARD_FILE).write_text(text)
    with pytest.raises(EdgerobError, match="not a valid model card") as err:
        load_checkpoint(directory)
    assert str(directory / CARD_FILE) in str(err.value)


def test_full_card_with_unknown_field_rejected(saved):
    _, card, directory = saved
    raw = json.loads((directory / CARD_FILE).read_text())
    raw["unexpected"] = True
    (directory / CARD_FILE).write_text(json.dumps(raw))
    with pytest.raises(EdgerobError):
        load_card(directory)


def test_card_not_utf8(saved):
    _, _, directory = saved
    (directory / CARD_FILE).write_bytes(b"\xff\xfe{\x00")
    with pytest.raises(EdgerobError):
        load_card(directory)
