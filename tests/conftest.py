"Shared fixtures: a small real ONNX model with the team contract's metadata, sample images, a server on loopback."
import io, json, os, sys, warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fabguard
from fabguard.data import CLASSES, IMAGENET_MEAN, IMAGENET_STD, normalize, synth_image

VARIANT = "student_fp32_test"
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def root(): return ROOT


def fabguard_cmd(*args):
    "The `fabguard` console script of this interpreter's environment, with arguments."
    return [str(BIN / "fabguard"), *map(str, args)]


def make_test_model(path, img_size:int=64, classes=CLASSES, variant:str=VARIANT, int8:bool=False, props:dict|None=None) -> Path:
    "An untrained MobileNetV3-Small (BatchNorm set on synthetic images) exported as the contract says; INT8 via ORT static quantization; `props` override metadata."
    import onnx, torchvision
    path = Path(path); torch.manual_seed(0)
    m = torchvision.models.mobilenet_v3_small(num_classes=len(classes))
    for b in m.modules():
        if isinstance(b, torch.nn.BatchNorm2d): b.momentum = None; b.reset_running_stats()
    xs = normalize(torch.stack([torch.from_numpy(synth_image(c, np.random.default_rng(10_000 + i), size=img_size)).permute(2, 0, 1)
                                for i, c in enumerate(list(classes) * 2)]))
    with torch.no_grad(): m.train()(xs)
    torch.nn.init.normal_(m.classifier[-1].weight, 0, 0.1); m.eval()
    fp32 = path.with_name(path.stem + "-fp32.onnx") if int8 else path
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (xs[:2],), str(fp32), input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, opset_version=17, dynamo=False)
    if int8:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
        class Reader(CalibrationDataReader):
            def __init__(self): self.it = iter([{"input": xs[i:i + 8].numpy()} for i in range(0, len(xs), 8)])
            def get_next(self): return next(self.it, None)
        quantize_static(str(fp32), str(path), Reader(), quant_format=QuantFormat.QDQ, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
    mp = onnx.load(str(path))
    meta = dict(classes=json.dumps(list(classes)), img_size=str(img_size), mean=json.dumps(IMAGENET_MEAN), std=json.dumps(IMAGENET_STD),
                arch="mobilenet_v3_small", source_sha256="0" * 64, variant=variant, fabguard_version=fabguard.__version__)
    meta.update(props or {})
    del mp.metadata_props[:]
    for k, v in meta.items(): mp.metadata_props.add(key=k, value=v)
    onnx.save(mp, str(path))
    return path


def encode(a, fmt="PNG", **kw) -> bytes:
    b = io.BytesIO(); Image.fromarray(a).save(b, fmt, **kw); return b.getvalue()


def draw(seed0:int, n:int, size:int=64, dark:float=1.0) -> list:
    "`n` synthetic images, the classes in turn; `dark` < 1 darkens them (a drifted line)."
    return [(synth_image(CLASSES[i % len(CLASSES)], np.random.default_rng(seed0 + i), size=size) * dark).astype(np.uint8) for i in range(n)]


@pytest.fixture(scope="session")
def model_path(tmp_path_factory):
    return make_test_model(tmp_path_factory.mktemp("model") / "student_test.onnx")


@pytest.fixture(scope="session")
def engine(model_path):
    from fabguard.serve import Engine
    return Engine(model_path, threads=1)


@pytest.fixture(scope="session")
def metrics_json(tmp_path_factory, engine):
    "A study metrics.json as 04 writes it, with this model's measured numbers and a drift reference."
    from fabguard.serve import build_reference
    p = tmp_path_factory.mktemp("report") / "metrics.json"
    p.write_text(json.dumps({"dataset": "synthetic", "profile": "smoke", "created": "2025-01-01T00:00:00",
                             "env": {"cpu": "test cpu"},
                             "models": {VARIANT: {"accuracy": 0.91, "macro_f1": 0.9, "ece": 0.03, "file_mb": 6.1,
                                                  "latency_ms": {"b1_t1": {"p50": 1.5, "p90": 1.8, "p99": 2.2}}}},
                             "reference": build_reference(engine, draw(0, 60))}))
    return p


if __name__ == "__main__":  # python tests/conftest.py OUT.onnx [--int8] [--size PX]: a test model for scripts/loadtest.py
    out = Path(sys.argv[1]); int8 = "--int8" in sys.argv
    size = int(sys.argv[sys.argv.index("--size") + 1]) if "--size" in sys.argv else 64
    print(make_test_model(out, img_size=size, int8=int8, variant="student_int8_test" if int8 else VARIANT))
