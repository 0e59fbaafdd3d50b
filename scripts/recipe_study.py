"""The teacher's recipe study (01, "The recipe study"): each variant trains EfficientNet-B0 from scratch with `fabguard.train.fit`
on the quick profile's synthetic data and records its validation macro-F1 per epoch and its training seconds.

    python scripts/recipe_study.py --jobs 2             # every variant not yet in the results, two at a time (one thread each)
    python scripts/recipe_study.py --only bs32 --jobs 1 # one variant
    python scripts/recipe_study.py --table              # the markdown table and figure from the results

Results go to reports/synthetic/recipe_study/results.jsonl (one JSON line per variant, written by the run that measured it).
The validation split only: the test split never takes part in choosing a recipe.
"""
import os, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from variant_study import append_result, load_results, main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "reports" / "synthetic" / "recipe_study"
DATA = dict(per_class=800, size=128, seed=0, difficulty=0.3, imbalance=3.0)  # the quick profile's data
# name -> (base recipe, recipe overrides, run settings); every run is 8 epochs over the same 7,840 training images
VARIANTS = {
    "seed recipe, batch 16": ("seed", {}, dict(bs=16)),
    "budget, batch 64": ("budget", {}, dict(bs=64)),
    "budget, batch 32": ("budget", {}, dict(bs=32)),
    "budget, batch 16": ("budget", {}, dict(bs=16)),
    "budget, batch 8": ("budget", {}, dict(bs=8)),
    "budget, batch 32, peak lr 4e-3": ("budget", {"lr": 4e-3}, dict(bs=32)),
    "budget, batch 16, no zero-init residuals": ("budget", {"zero_init_residual": False}, dict(bs=16)),
    "budget, batch 64, 200 images per class, 30 epochs": ("budget", {}, dict(bs=64, per_class=200, epochs=30)),
}


def run_one(name, threads=1):
    "Train one variant and append its result line."
    import torch
    from fabguard.data import Augment, SEED_AUGMENT, load_tensors, prepare_dataset
    from fabguard.train import fit, get_recipe, make_meta, recipe_model, seed_everything
    base, over, cfg = VARIANTS[name]
    cfg = dict(dict(bs=64, size=64, epochs=8, aug="seed", per_class=DATA["per_class"]), **cfg)
    torch.set_num_threads(threads)
    data_dir = ROOT / "artifacts" / f"recipe-study-{cfg['per_class']}"
    scan = prepare_dataset("synthetic", data_dir, **dict(DATA, per_class=cfg["per_class"]), progress=False)
    d = load_tensors(scan, cfg["size"], data_dir / "cache", progress=False)
    r = dict(get_recipe(base), **over)
    aug = {"seed": SEED_AUGMENT, "light": Augment(degrees=5, translate=0.03, scale=(1.0, 1.1), brightness=0.1, contrast=0.1)}[cfg["aug"]]
    seed_everything(0); m = recipe_model("efficientnet_b0", len(scan.classes), r)
    with tempfile.TemporaryDirectory() as t:
        h = fit(m, d, Path(t) / "m.pt", make_meta("efficientnet_b0", scan.classes, cfg["size"], scan.hash), recipe=r,
                epochs=cfg["epochs"], batch_size=cfg["bs"], patience=10 ** 6, augment=aug, progress=False)
    keep = ("epoch", "train_acc", "val_macro_f1", "elapsed_s", "lr", "images_per_s")
    res = dict(variant=name, recipe=r, settings=cfg, n_train=len(d["train"][1]), steps=cfg["epochs"] * -(-len(d["train"][1]) // cfg["bs"]),
               samples=cfg["epochs"] * len(d["train"][1]), best_val_macro_f1=h["best_val_macro_f1"], final_val_macro_f1=h["history"][-1]["val_macro_f1"],
               train_seconds=h["train_seconds"], threads=threads, cpu_count=os.cpu_count(), created=time.strftime("%Y-%m-%dT%H:%M:%S"),
               history=[{k: x[k] for k in keep} for x in h["history"]])
    append_result(OUT, res)
    print(f"{name}: best val macro-F1 {res['best_val_macro_f1']:.3f} in {res['train_seconds']:.0f} s", flush=True)


def results() -> dict: return load_results(OUT)


def table(res:dict) -> str:
    "Markdown table, best first."
    rows = ["| variant | batch | px | steps | samples | val macro-F1 | training s |", "|---|---|---|---|---|---|---|"]
    for r in sorted(res.values(), key=lambda r: -r["best_val_macro_f1"]):
        s = r["settings"]
        rows.append(f"| {r['variant']} | {s['bs']} | {s['size']} | {r['steps']:,} | {r['samples']:,} | {r['best_val_macro_f1']:.3f} | {r['train_seconds']:.0f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main(__file__, __doc__, VARIANTS, OUT, run_one, lambda res: print(table(res)))
