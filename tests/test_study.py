"The whole study (00-04a, smoke profile) on a user's own flat image folder with three classes of its own."
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fabguard.files import model_card_paths
from fabguard.serve import Engine
from fabguard.study import run_study

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # the same study as test_smoke_study_synthetic on a user's folder; its folder handling is test_profiles' and test_data's
def test_study_on_own_folder(tmp_path):
    rng = np.random.default_rng(0)
    for ci, c in enumerate(["scratch", "clean", "stain"]):
        (tmp_path / "lot" / c).mkdir(parents=True)
        for i in range(12):
            a = rng.integers(0, 60, (40, 40, 3)).astype(np.uint8); a[10:30, 5 + 10 * ci:15 + 10 * ci] = 220  # a class-specific mark
            Image.fromarray(a).save(tmp_path / "lot" / c / f"{i}.{'jpg' if i % 2 else 'png'}")
    rep = run_study("smoke", str(tmp_path / "lot"), root=ROOT, reports=tmp_path / "reports", artifacts=tmp_path / "artifacts", lessons=False, log=lambda s: None)
    assert rep == tmp_path / "reports" / "lot" / "smoke"
    m = json.loads((rep / "metrics.json").read_text())
    assert m["dataset"].endswith("lot") and set(m["models"]) >= {"teacher_onnx", "student_int8", "student_pruned_torch"}
    assert list(m["models"]["student_int8"]["per_class"]) == ["clean", "scratch", "stain"]  # classes from the folders
    assert "student_int8" in (rep / "REPORT.md").read_text() and (rep / "REPORT.html").exists()
    assert sorted(p.name for p in (rep / "executed").glob("*.ipynb")) == [f"{n}.ipynb" for n in ("00_data", "01_teacher", "02_distill", "03_quantize",
                                                                                                   "03a_prune", "03c_edge", "04_benchmark", "04a_gallery")]
    # the no-defect class: `clean`, picked by its name, from the manifest through the checkpoints into every ONNX file
    run = tmp_path / "artifacts" / "lot-smoke"
    assert json.loads((run / "manifest.json").read_text())["good_class"] == "clean" and m["data"]["good_class"] == "clean"
    for ck in ("teacher.pt", "student.pt", "student_pruned.pt"):
        assert torch.load(run / ck, weights_only=True)["meta"]["good_class"] == "clean", ck
    images = sorted(p for p in (tmp_path / "lot").rglob("*") if p.is_file())
    for f in ("teacher.onnx", "student.onnx", "student_int8.onnx"):
        e = Engine(run / f, threads=1)
        preds = list(e.predict_many(images))
        assert e.good_class == "clean" and len(preds) == 36 and not any("error" in p for p in preds), f
        assert [p["defect_detected"] for p in preds] == [p["class"] != "clean" for p in preds], f
        card = json.loads(model_card_paths(run / f)[0].read_text())  # 04a: a card beside every ONNX file
        assert card["model"]["sha256"] == e.sha256 and card["data"]["good_class"] == "clean" and card["data"]["classes"] == ["clean", "scratch", "stain"], f
    assert (rep / "MODEL_CARD.md").read_text() == model_card_paths(run / "student_int8.onnx")[1].read_text()


def test_smoke_study_synthetic(tmp_path):
    "The default path end to end (smoke profile): every study cell that nbdev-test skips runs here, in order (the lessons are nbdev-test's)."
    rep = run_study("smoke", "synthetic", root=ROOT, reports=tmp_path / "reports", artifacts=tmp_path / "artifacts", lessons=False, log=lambda s: None)
    assert rep == tmp_path / "reports" / "synthetic" / "smoke"
    m = json.loads((rep / "metrics.json").read_text())
    assert set(m["models"]) >= {"teacher_torch", "teacher_onnx", "student_onnx", "student_int8", "student_scratch_torch", "student_pruned_torch"}
    st = m["steps"]
    assert st["teacher"]["recipe"]["name"] == "budget" and "0.8" in st["teacher"]["seconds_to"]
    assert st["distill"]["findings"] and st["distill"]["kd_vs_scratch"]["n_runs"] == 1
    assert "one run cannot tell" in st["distill"]["findings"][1]  # one run never says helped or hurt
    assert json.loads((rep / "distill_runs.json").read_text())["verdict"] == "one run"
    assert m["env"]["lock"]["matches"] is True, m["env"]["lock"]["differs"]  # `make install` installed exactly requirements.lock
    assert set(st["time_to_accuracy"]) == {"teacher", "student_kd", "student_scratch", "student_minimal"} and "pruning" in st
    run = tmp_path / "artifacts" / "synthetic-smoke"
    pipe = json.loads((run / "data_metrics.json").read_text())["pipeline"]
    assert pipe["batched_augment_ips"] > 0 and pipe["per_image_v2_ips"] > 0
    report = (rep / "REPORT.md").read_text()
    assert "## Time to accuracy" in report
    # 04a: the report opens with the error gallery, its figures exist, the shipped model's card sits beside the report
    assert report.index("## Error gallery") < report.index("## The answers") and "[MODEL_CARD.md](MODEL_CARD.md)" in report
    g = m["gallery"]
    assert set(g["models"]) == {"student_int8", "teacher_onnx"} and all((rep / e["figure"]).exists() for e in [*g["models"].values(), g["disagreement"]])
    assert all("f1_ci95" in v for v in m["models"]["student_int8"]["per_class"].values())
    assert (rep / "MODEL_CARD.md").read_text().startswith("# Model card: `student_int8.onnx`")
    # 03/04: the shipped INT8 student of either architecture, every ONNX variant timed at the study's size and at 224 px
    i8, minimal = m["models"]["student_int8"], (run / "student_minimal.pt").exists()
    assert i8["arch"] in ("mobilenet_v3_small", "mobilenet_v3_small_minimal") and set(i8["latency"]["onnxruntime"]) == {"64", "224"}
    assert ("student_minimal_onnx" in m["models"]) == minimal and (run / "student_int8_224.onnx").exists()
    g = m["goals"]  # the shipped INT8 student's runtime may have no 224-px latency in smoke (edge_latency_px = 0): then unmeasured, never invented
    assert (g["vs_teacher_fastest"] > 0) if g["runtime"] == "onnxruntime" else g["vs_teacher_fastest"] is None or g["vs_teacher_fastest"] > 0
    assert "student_int8_vs_teacher_onnx_224px" in m["speedups"]
    q = json.loads((run / "quant_metrics.json").read_text())
    assert set(q["sensitivity"]) == ({"student", "student_minimal"} if minimal else {"student"}) and q["shipped"]["why"]
