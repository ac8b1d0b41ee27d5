import json

import numpy as np
import onnx
import pytest

from edgerob.errors import EdgerobError
from edgerob.device.artifacts import find_artifacts, load_artifact
from edgerob.host.export import MIN_AGREEMENT, export
from edgerob.files import file_sha256
from edgerob.host.models import load_checkpoint
from edgerob.device.runtimes import create_runtime


def test_three_precisions_with_parity(tiny_artifacts, tiny_model):
    assert list(tiny_artifacts) == ["fp32", "fp16", "int8"]
    card_sha = load_checkpoint(tiny_model)[1].checkpoint_sha256
    for p, art in tiny_artifacts.items():
        assert art.sha256 == file_sha256(art.path)
        assert art.checkpoint_sha256 == card_sha
        assert art.parity["top1_agreement"] >= MIN_AGREEMENT[p]
        assert art.parity["samples"] == 360
        meta = json.loads(open(art.path.replace(".onnx", ".json")).read())
        assert meta["parity"] == art.parity and meta["precision"] == p
    assert tiny_artifacts["fp32"].parity["max_abs_logit_error"] < 1e-3
    assert tiny_artifacts["fp32"].parity["reference"] == "torch fp32"
    assert tiny_artifacts["int8"].calibration["samples"] == 256


def test_precision_is_in_the_graph(tiny_artifacts):
    """fp16 carries float16 initialisers, int8 Q/DQ nodes; both keep float32 inputs/outputs."""
    fp16 = onnx.load(tiny_artifacts["fp16"].path)
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in fp16.graph.initializer)
    int8 = onnx.load(tiny_artifacts["int8"].path)
    ops = {n.op_type for n in int8.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    for m in (fp16, int8):
        assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert m.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    # single file: no external data
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL
                   for t in onnx.load(tiny_artifacts["fp32"].path).graph.initializer)


def test_dynamic_batch_and_torch_agreement(tiny_artifacts, tiny_model):
    import torch

    model, _ = load_checkpoint(tiny_model)
    x = np.random.default_rng(0).random((5, 1, 16, 16), dtype=np.float32)
    rt = create_runtime("onnxruntime", tiny_artifacts["fp32"].path)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(rt.run(x), ref, atol=1e-4)
    assert rt.run(x[:1]).shape == (1, 10)


def test_reuse_keeps_files_and_exports_only_what_is_asked(tiny_model, tiny_artifacts, tmp_path):
    before = {p: a.sha256 for p, a in tiny_artifacts.items()}
    again = export(tiny_model)
    assert {p: a.sha256 for p, a in again.items()} == before
    one = export(tiny_model, tmp_path / "only", precisions=["fp16"])
    assert list(one) == ["fp16"] and list(find_artifacts(tmp_path / "only")) == ["fp16"]


def test_corrupt_artifact_is_refused(tiny_artifacts, tmp_path):
    src = tiny_artifacts["fp32"]
    bad = tmp_path / "fp32.onnx"
    bad.write_bytes(open(src.path, "rb").read()[:-100])
    (tmp_path / "fp32.json").write_text(open(src.path.replace(".onnx", ".json")).read())
    with pytest.raises(EdgerobError, match="sha256"):
        load_artifact(bad)
    with pytest.raises(EdgerobError, match="cannot load"):
        create_runtime("onnxruntime", bad)


def test_broken_export_fails_and_writes_nothing(tiny_model, tmp_path, monkeypatch):
    """An int8 graph that disagrees with fp32 must fail loudly and leave no artifact. The graph
    is broken on purpose, not by luck: its logits are negated, so its top-1 is fp32's bottom-1
    on every image (0% agreement, whatever the calibration or the library versions)."""
    import onnx
    from onnx import helper

    import edgerob.host.export as ex

    real = ex._to_int8

    def negated(*args):
        graph, excluded = real(*args)
        model = onnx.load_from_string(graph)
        out = model.graph.output[0].name
        for node in model.graph.node:  # the last node now writes a hidden tensor ...
            node.output[:] = [f"{o}_raw" if o == out else o for o in node.output]
        model.graph.node.append(helper.make_node("Neg", [f"{out}_raw"], [out]))  # ... negated
        return model.SerializeToString(), excluded

    monkeypatch.setattr(ex, "_to_int8", negated)
    with pytest.raises(EdgerobError, match=r"int8 export is broken: top-1 agrees with fp32 on "
                                           r"only 0\.0%"):
        export(tiny_model, tmp_path, precisions=["int8"])
    assert list(tmp_path.iterdir()) == []  # neither the graph nor its metadata


@pytest.mark.parametrize("precision, wrong, refused", [
    ("int8", 180, True),    # 50.0%: broken, though far from 0%
    ("int8", 19, True),     # 94.7%: just under the 95% floor
    ("int8", 18, False),    # 95.0% exactly (342/360 = 19/20, the same double as 0.95): enough
    ("fp16", 8, True),      # 97.8%: under the 98% floor
    ("fp16", 7, False),     # 98.1%
])
def test_agreement_floor(tiny_model, tmp_path, monkeypatch, precision, wrong, refused):
    """The floor itself, at agreements between 0 and 1 known exactly: the artifact's inference
    is replaced by fp32's top-1 (the reference's own run, the first one) made wrong on `wrong`
    of the 360 parity images. The int8 graph is not built (its own agreement is not the point)."""
    import edgerob.host.export as ex

    real_run = ex._run_onnx
    runs = []

    def run(path, x):
        runs.append(real_run(path, x))
        if len(runs) == 1:
            return runs[0]  # the fp32 reference
        top = runs[0].argmax(1)
        top[:wrong] = (top[:wrong] + 1) % runs[0].shape[1]
        return np.eye(runs[0].shape[1], dtype=np.float32)[top]

    monkeypatch.setattr(ex, "_run_onnx", run)
    monkeypatch.setattr(ex, "_to_int8", lambda fp32, *a: (fp32.read_bytes(), []))
    agreement = f"{(360 - wrong) / 360:.1%}"
    if refused:
        with pytest.raises(EdgerobError, match=rf"{precision} export is broken: top-1 agrees "
                                               rf"with fp32 on only {agreement} of 360"):
            export(tiny_model, tmp_path, precisions=[precision])
        assert list(tmp_path.iterdir()) == []
    else:
        art = export(tiny_model, tmp_path, precisions=[precision])[precision]
        assert art.parity["top1_agreement"] == pytest.approx((360 - wrong) / 360)
        assert art.parity["samples"] == 360 and len(runs) == 2


def test_unknown_precision(tiny_model):
    with pytest.raises(EdgerobError, match="unknown precision"):
        export(tiny_model, precisions=["fp8"])
