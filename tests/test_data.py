"End to end over the data layer: generate, check, load, batch; determinism; a corpus of bad dataset folders."
import json, subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fabguard.data import (Batches, DatasetError, load_tensors, normalize, prepare_dataset, scan_dataset,
                           synthesize)
from conftest import fabguard_cmd


def test_generate_check_load_batch(tmp_path):
    out = tmp_path / "syn"
    r = subprocess.run(fabguard_cmd("data", "synth", "--out", out, "--per-class", 6, "--size", 48, "--imbalance", 2),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"]["train"]["Good"] == 8 and m["counts"]["test"]["Void"] == 1 and len(m["files"]) == 11 * 6 + 12
    r = subprocess.run(fabguard_cmd("data", "check", out), capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stdout + r.stderr
    scan = scan_dataset(out, progress=False)
    data = load_tensors(scan, 32, tmp_path / "cache", progress=False)
    assert {k: len(v[1]) for k, v in data.items()} == {"train": 52, "val": 13, "test": 13}
    assert list(tmp_path.joinpath("cache").iterdir())  # cached, keyed by the manifest hash
    again = load_tensors(scan, 32, tmp_path / "cache", progress=False)
    assert torch.equal(again["train"][0], data["train"][0])
    xb, yb = next(iter(Batches(*data["train"], batch_size=16, train=True)))
    x = normalize(xb)
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and yb.max() < 12


def test_synthesize_is_deterministic(tmp_path):
    kw = dict(per_class=3, size=40, difficulty=0.8, imbalance=1.5, progress=False)
    a, b, c = (synthesize(tmp_path / n, seed=s, **kw) for n, s in (("a", 7), ("b", 7), ("c", 8)))
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert files and all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert (a / "manifest.json").read_bytes() == (b / "manifest.json").read_bytes()
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in files)


def test_prepare_dataset_reuses_and_rejects(tmp_path):
    s1 = prepare_dataset("synthetic", tmp_path, per_class=3, size=40, progress=False)
    mtime = (tmp_path / "data" / "manifest.json").stat().st_mtime_ns
    s2 = prepare_dataset("synthetic", tmp_path, per_class=3, size=40, progress=False)
    assert s1.hash == s2.hash and (tmp_path / "data" / "manifest.json").stat().st_mtime_ns == mtime
    with pytest.raises(DatasetError, match="no such folder"): prepare_dataset(str(tmp_path / "nope"), tmp_path)


def _bad_corpus(root: Path):
    "A split-layout dataset with one of every problem a real folder can have."
    for split in ("train", "val", "test"):
        for c in ("Good", "Void"):
            d = root / split / c; d.mkdir(parents=True)
            for i in range(3): Image.new("RGB", (24, 24), (i * 40, 90, 90)).save(d / f"ok{i}.png")
    t = root / "train"
    (t / "Crack").mkdir()  # empty class folder
    (t / "Good" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    Image.new("RGB", (64, 64), (9, 9, 9)).save(t / "Good" / "full.jpg", quality=90)
    (t / "Good" / "truncated.jpg").write_bytes((t / "Good" / "full.jpg").read_bytes()[:300])
    (t / "Good" / "notes.png").write_text("this is a text file")
    Image.fromarray(np.full((24, 24), 50000, np.uint16)).save(t / "Void" / "sixteen.png")
    Image.new("RGBA", (24, 24), (200, 10, 10, 128)).save(t / "Void" / "rgba.png")
    Image.new("P", (24, 24), 3).save(t / "Void" / "palette.png")
    Image.new("L", (5000, 5000)).save(t / "Void" / "huge.png")
    Image.new("L", (24, 24)).save(t / "Void" / "anim.gif")
    Image.new("RGB", (24, 24)).save(t / "Void" / "by_content.bmp.png", format="BMP")  # BMP named .png
    (t / "Void" / ".hidden").mkdir(); Image.new("RGB", (24, 24)).save(t / "Void" / ".hidden" / "x.png")
    (t / "Void" / "nested").mkdir(); Image.new("RGB", (24, 24)).save(t / "Void" / "nested" / "deep.png")
    (root / "val" / "Stray").mkdir(); Image.new("RGB", (24, 24)).save(root / "val" / "Stray" / "s.png")


def test_bad_dataset_corpus(tmp_path):
    _bad_corpus(tmp_path)
    scan = scan_dataset(tmp_path, progress=False)
    msgs = "\n".join(scan.warnings + scan.errors)
    assert scan.classes == ["Crack", "Good", "Void"]
    for needle in ("corrupt.png: corrupt or truncated", "truncated.jpg: corrupt or truncated", "notes.png: not an image",
                   "huge.png: 5000x5000 px exceeds the limit", "anim.gif: unsupported format GIF",
                   "sixteen.png: I;16 image converted", "rgba.png: RGBA image converted", "palette.png: P image converted",
                   "Stray: class folder not among the classes", "class 'Crack' has no usable training images"):
        assert needle in msgs, needle
    paths = {i["path"] for i in scan.items}
    assert "train/Void/by_content.bmp.png" in paths and "train/Void/nested/deep.png" in paths  # format by content; nested kept
    assert not any(".hidden" in p for p in paths)  # hidden folders skipped
    assert scan.counts()["train"] == {"Crack": 0, "Good": 4, "Void": 8}
    # the CLI reports everything and fails on the fatal problems, without a traceback
    r = subprocess.run(fabguard_cmd("data", "check", tmp_path), capture_output=True, text=True)
    assert r.returncode == 1 and "FAILED" in r.stdout and "Traceback" not in r.stdout + r.stderr
    with pytest.raises(DatasetError, match="unusable dataset"): prepare_dataset(str(tmp_path), tmp_path / "run")
    # once the fatal problems are fixed, the rest are skipped or converted and the data loads
    (tmp_path / "train" / "Crack").rmdir(); (tmp_path / "val" / "Stray" / "s.png").unlink(); (tmp_path / "val" / "Stray").rmdir()
    scan = prepare_dataset(str(tmp_path), tmp_path / "run", progress=False)
    data = load_tensors(scan, 16, progress=False)
    assert data["train"][0].shape == (12, 3, 16, 16)


def test_flat_folder_without_val_or_test_images(tmp_path):
    "A flat folder so small that the hash split leaves no validation image at all: one clear error, not a crash in 01."
    from fabguard.data import _hash_split
    lot = tmp_path / "lot"
    for c in ("a", "b"):
        (lot / c).mkdir(parents=True)
        for name in [f"{i}.png" for i in range(200) if _hash_split(f"{c}/{i}.png") == "train"][:3]:
            Image.new("RGB", (16, 16), (len(name), 0, 0)).save(lot / c / name)
    scan = scan_dataset(lot, progress=False)
    assert scan.counts()["train"] == {"a": 3, "b": 3}
    assert any("no usable val images at all (6 images" in e for e in scan.errors)
    with pytest.raises(DatasetError, match="no usable test images at all"): prepare_dataset(str(lot), tmp_path / "run")


def test_good_class(tmp_path, capsys):
    "No class that means 'no defect': none, and a report that says so; a --good-class that is no class: one line, exit 2."
    from fabguard.cli import main
    lot = tmp_path / "lot"
    for c in ("crack", "stain"):
        (lot / c).mkdir(parents=True)
        for i in range(12): Image.new("RGB", (16, 16), (i * 20, len(c), 0)).save(lot / c / f"{i}.png")
    scan = scan_dataset(lot, progress=False)
    assert scan.good_class is None and "no-defect class: none" in scan.report()
    assert scan_dataset(lot, good_class="stain", progress=False).manifest()["good_class"] == "stain"
    assert main(["data", "check", str(lot), "--good-class", "stain"]) == 0 and "no-defect class: stain" in capsys.readouterr().out
    assert main(["data", "check", str(lot), "--good-class", "Good"]) == 2
    err = capsys.readouterr().err
    assert err == "fabguard: error: good_class='Good': not one of the classes ['crack', 'stain']\n"
    with pytest.raises(ValueError, match="good_class='Good'"): prepare_dataset(str(lot), tmp_path / "run", good_class="Good")


def test_cli_bad_parameters(tmp_path):
    r = subprocess.run(fabguard_cmd("data", "synth", "--out", tmp_path / "x", "--difficulty", 3), capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip() == "fabguard: error: difficulty=3.0 must be within 0..1"
