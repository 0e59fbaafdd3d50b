"Function matching's mixed views (02, `kd_mixup`): what the images and the hard-term targets are, and that `fit` trains on them."
import pytest
import torch

from fabguard.data import load_tensors, prepare_dataset
from fabguard.distill import KDLoss, kd_loss, make_views, mixup_views, study_students
from fabguard.train import CELoss, build_model, fit, make_meta, seed_everything


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    sc = prepare_dataset("synthetic", d, per_class=8, size=32, progress=False)
    return d, sc, load_tensors(sc, 32, progress=False)


def test_mixup_views(tiny):
    _, sc, data = tiny
    x, y = data["train"]; k = len(sc.classes)
    views = make_views(x, 2, seed=3)
    mixed, targets = mixup_views(views, y, k, alpha=1.0, seed=3)
    again, targets2 = mixup_views(views, y, k, alpha=1.0, seed=3)
    assert torch.equal(mixed, again) and torch.equal(targets, targets2)  # drawn from the seed alone
    assert mixed.dtype == torch.uint8 and mixed.shape == views.shape and targets.shape == (2, len(y), k)
    assert torch.allclose(targets.sum(-1), torch.ones(2, len(y)))
    lam = targets.gather(-1, y.long().view(1, -1, 1).expand(2, -1, 1)).squeeze(-1)
    assert (lam >= 0.5 - 1e-6).all()  # each image keeps the larger share ...
    assert (targets.argmax(-1) == y).float().mean() > 0.9  # ... and so its label (ties only where the partner has the same class)
    assert not torch.equal(mixed, views)
    # the pixels are the mixture the targets describe: partner = the image whose one-hot mass completes the target
    other, _ = mixup_views(views, y, k, alpha=1.0, seed=4)
    assert not torch.equal(other, mixed)
    with pytest.raises(ValueError, match="alpha=0"): mixup_views(views, y, k, alpha=0)
    with pytest.raises(ValueError, match="labels for"): mixup_views(views, y[:-1], k)


def test_losses_take_mixed_targets():
    torch.manual_seed(0)
    s, t = torch.randn(6, 4), torch.randn(6, 4); y = torch.tensor([0, 1, 2, 3, 0, 1])
    soft = torch.softmax(torch.randn(6, 4), 1)
    assert torch.isclose(KDLoss(None)(s, y, None, teacher_logits=t, targets=soft), kd_loss(s, t, soft))
    assert not torch.isclose(KDLoss(None)(s, y, None, teacher_logits=t, targets=soft), KDLoss(None)(s, y, None, teacher_logits=t))
    onehot = torch.nn.functional.one_hot(y, 4).float()
    assert torch.isclose(CELoss()(s, y, targets=onehot), CELoss()(s, y))  # one-hot targets: the plain loss


def test_fit_learns_from_mixed_views(tiny, tmp_path):
    "A scratch student on mixed views: the targets reach the loss (another run without them differs) and it learns."
    _, sc, data = tiny
    x, y = data["train"]; k = len(sc.classes)
    mixed, targets = mixup_views(make_views(x, 2, seed=0), y, k, seed=0)
    runs = []
    for i, tg in enumerate((targets, None)):
        seed_everything(0); m = build_model("mobilenet_v3_small", k)
        r = fit(m, data, tmp_path / f"m{i}.pt", make_meta("mobilenet_v3_small", sc.classes, 32, sc.hash), recipe="budget", epochs=8, batch_size=16,
                patience=10, views=(mixed, None, tg), progress=False)
        runs.append(r)
    assert runs[0]["recipe"]["augment"] == "2 fixed views mixed (mixup)" and runs[1]["recipe"]["augment"] == "2 fixed views"
    assert runs[0]["history"][0]["train_loss"] != runs[1]["history"][0]["train_loss"]
    h = [e["train_loss"] for e in runs[0]["history"]]
    assert sum(h[-2:]) / 2 < h[0] - 0.2, h  # it learns the mixed targets (single epochs are noisy on 96 views)


def test_mixup_needs_cached_views(tiny, tmp_path):
    _, sc, data = tiny
    with pytest.raises(ValueError, match="kd_mixup=1.0: mixed views need kd_views > 0"):
        study_students(sc, data, tmp_path, torch.nn.Identity(), {"arch": "x", "epoch": 0, "mean": None, "std": None}, kd_mixup=1.0, kd_views=0)
