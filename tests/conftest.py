"Shared fixtures: a small real ONNX model exported by fabguard's own exporter, sample images, a server on loopback."
import io, json, sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fabguard.data import normalize
from fabguard.synthetic import CLASSES, GOOD, synth_image

VARIANT = "student_fp32_test"
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def root(): return ROOT


def fabguard_cmd(*args):
    "The `fabguard` console script of this interpreter's environment, with arguments."
    return [str(BIN / "fabguard"), *map(str, args)]


def make_test_net(img_size:int=64, classes=CLASSES):
    "An untrained MobileNetV3-Small, BatchNorm set on synthetic images: (model, checkpoint metadata, those uint8 images)."
    import torchvision
    from fabguard.train import make_meta
    torch.manual_seed(0)
    m = torchvision.models.mobilenet_v3_small(num_classes=len(classes))
    for b in m.modules():
        if isinstance(b, torch.nn.BatchNorm2d): b.momentum = None; b.reset_running_stats()
    x8 = torch.stack([torch.from_numpy(synth_image(c, np.random.default_rng(10_000 + i), size=img_size)).permute(2, 0, 1)
                      for i, c in enumerate(list(classes) * 2)])
    with torch.no_grad(): m.train()(normalize(x8))
    torch.nn.init.normal_(m.classifier[-1].weight, 0, 0.1); m.eval()
    return m, make_meta("mobilenet_v3_small", list(classes), img_size, "0" * 64, good_class=GOOD if GOOD in classes else None), x8


def make_test_model(path, img_size:int=64, classes=CLASSES, variant:str=VARIANT, int8:bool=False, props:dict|None=None) -> Path:
    "`make_test_net` exported by `quantize.export_onnx` (uint8 input); INT8 by `quantize.quantize_int8`; `props` override metadata."
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from fabguard.quantize import ImageCalibrationReader, export_onnx, quantize_int8, set_metadata
    path = Path(path); m, meta, x8 = make_test_net(img_size, classes)
    fp32 = path.with_name(path.stem + "-fp32.onnx") if int8 else path
    export_onnx(m, meta, fp32, variant, "0" * 64)
    if int8:
        pre = path.with_name(path.stem + "-pre.onnx"); quant_pre_process(str(fp32), str(pre))
        quantize_int8(pre, path, ImageCalibrationReader(x8, n=len(x8), min_images=1), fmt="QDQ", types="U8S8")
        onnx.save(set_metadata(onnx.load(path), meta, variant, "0" * 64), path)
    if props:
        mp = onnx.load(path); d = {q.key: q.value for q in mp.metadata_props}; d.update(props)
        onnx.helper.set_model_props(mp, d); onnx.save(mp, path)
    return path


def make_test_pte(path, img_size:int=64, variant:str=VARIANT, int8:bool=False) -> Path:
    "`make_test_net` exported by `edge.export_pte` (FP32, or INT8 calibrated on its images), with its sidecar."
    from fabguard.edge import export_pte
    m, meta, x8 = make_test_net(img_size)
    return export_pte(m, meta, path, img_size, x8 if int8 else None, variant=variant, source_sha256="0" * 64)


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


def pytest_collection_modifyitems(items):
    "The smoke study (test_study.py, the longest test) first: with one worker per core (`make test`), the other tests fill the other worker meanwhile."
    items.sort(key=lambda it: it.path.name != "test_study.py")  # a stable sort: the order within files is kept
