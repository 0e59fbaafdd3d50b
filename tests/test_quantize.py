"Bad inputs of 03 (clear one-line errors) and the parity check catching a different model."
import numpy as np, onnx, pytest, torch
from fabguard.quantize import (ImageCalibrationReader, ParityError, QuantizeError, check_parity, export_onnx, load_onnx, pre_process,
                               quant_configs, quantize_int8, variant_name)
from fabguard.runtime import ModelFileError, ort_logits, ort_session
from fabguard.train import CheckpointError, build_model, load_checkpoint, make_meta, predict_logits, save_checkpoint

META = make_meta("mobilenet_v3_small", ["a", "b", "c"], 32, "0" * 64)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("q"); torch.manual_seed(0)
    m = build_model("mobilenet_v3_small", 3).eval()
    save_checkpoint(d / "m.pt", m, META)
    return d, m, export_onnx(m, META, d / "m.onnx", "student", "0" * 64)


def one_line(e): assert "\n" not in str(e.value) and str(e.value)


@pytest.mark.parametrize("cut", [0.5, 0.05])
def test_truncated_onnx(exported, cut):
    d, _, p = exported; bad = d / f"cut{cut}.onnx"; bad.write_bytes(p.read_bytes()[: int(p.stat().st_size * cut)])
    for load, err in ((load_onnx, QuantizeError), (ort_session, ModelFileError)):
        with pytest.raises(err, match="not a valid ONNX model") as e: load(bad)
        one_line(e); assert str(bad) in str(e.value)


def test_garbage_and_missing_onnx(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelFileError, match="not a valid ONNX model"): ort_session(tmp_path / "x.onnx")
    with pytest.raises(QuantizeError, match="no such ONNX file"): load_onnx(tmp_path / "none.onnx")
    with pytest.raises(ModelFileError, match="none.onnx: no such ONNX file"): ort_session(tmp_path / "none.onnx")


def test_checkpoint_without_metadata(exported, tmp_path):
    _, m, _ = exported
    torch.save({"state_dict": m.state_dict()}, tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="no metadata") as e: load_checkpoint(tmp_path / "bare.pt")
    one_line(e)
    torch.save({"state_dict": m.state_dict(), "meta": {"arch": "mobilenet_v3_small"}}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="metadata lacks .*'classes'"): load_checkpoint(tmp_path / "partial.pt")
    torch.save(m.state_dict(), tmp_path / "raw.pt")
    with pytest.raises(CheckpointError, match="not a FabGuard checkpoint"): load_checkpoint(tmp_path / "raw.pt")


def test_too_few_calibration_images():
    x = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    with pytest.raises(QuantizeError, match="at least 16 images: got 5") as e:
        ImageCalibrationReader(x, n=64, min_images=16)
    one_line(e)


def test_parity_passes_and_catches_a_different_model(exported):
    d, m, p = exported
    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    r = check_parity(m, p, x, META); assert r["max_abs_diff"] <= 1e-4 and r["top1_agreement"] == 1 and r["failed"] == 0
    assert r["tolerance"]["rtol"] == 1e-3 and r["tolerance"]["atol"] == 1e-4 and r["near_tie_flips"] == 0
    m2, _ = load_checkpoint(d / "m.pt")
    with torch.no_grad(): m2.classifier[-1].bias += 0.01  # a small, deliberate difference
    with pytest.raises(ParityError, match="ONNX Runtime disagrees with PyTorch"): check_parity(m2, p, x, META)


def test_parity_on_logits_in_the_tens(tmp_path):
    "Logits the size a trained model gives: the tolerance grows with them, and a change beyond rounding is still caught."
    torch.manual_seed(0); m = build_model("mobilenet_v3_small", 3).eval()
    x = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        m.classifier[-1].bias.zero_(); m.classifier[-1].weight *= 30 / predict_logits(m, x, META["mean"], META["std"]).abs().max()
    big = predict_logits(m, x, META["mean"], META["std"]).abs().max().item()
    p = export_onnx(m, META, tmp_path / "big.onnx", "student")
    r = check_parity(m, p, x, META)
    assert 10 < big < 100 and r["failed"] == 0 and r["n"] == 40
    assert r["tolerance"]["max"] > 1e-3 * 10 and r["max_diff_over_tolerance"] < 1
    with torch.no_grad(): m.classifier[-1].bias += 0.02 * big  # 2% of the logits' size: no rounding error
    with pytest.raises(ParityError, match="big.onnx: ONNX Runtime disagrees with PyTorch on 40 of 40 images") as e: check_parity(m, p, x, META)
    one_line(e)


def test_int8_of_the_uint8_graph(exported, tmp_path):
    "The graph starts with the normalization (Cast, Div, Sub, Div): every configuration of the smoke grid, and the stem kept in float, still quantize and run on uint8 images."
    d, m, p = exported
    pre = pre_process(p, tmp_path / "pre.onnx"); g = onnx.load(pre).graph
    convs = [n for n in g.node if n.op_type == "Conv"]; conv = convs[0]; w = next(i for i in g.initializer if i.name == conv.input[1])
    assert w.dims[1] == 3 and g.input[0].name not in conv.input  # the 3-channel stem, behind the normalization
    ranking = [conv.name, convs[1].name]  # the stem first, as if it were the worst node
    x = torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    reader = ImageCalibrationReader(x, n=24, min_images=16)
    fp32 = ort_logits(ort_session(p), x.numpy())
    base = quant_configs("smoke")[0]
    for cfg in quant_configs("smoke") + [{**base, "float_nodes": 1}, {**base, "fmt": "QDQ", "float_nodes": 1}]:
        q = quantize_int8(pre, tmp_path / f"{variant_name(cfg)}.onnx", reader, ranking=ranking, **cfg)
        qg = onnx.load(q).graph
        assert qg.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8, cfg
        assert any(n.op_type in ("QLinearConv", "QuantizeLinear") for n in qg.node), cfg
        if cfg["float_nodes"]:  # the stem stays a float Conv with its float weights
            assert any(n.op_type == "Conv" and n.input[1] == conv.input[1] for n in qg.node), cfg
        lg = ort_logits(ort_session(q), x.numpy())
        assert lg.shape == fp32.shape and np.isfinite(lg).all(), cfg
