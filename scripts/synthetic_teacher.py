"""The pretrained teacher on the synthetic data (issue "A pretrained teacher from the registry", item 6): EfficientNet-Lite0
from its ImageNet weights, fine-tuned with 01's "finetune" recipe on the quick profile's data (64 px, batch 16, the seed
augmentation), for two and three epochs, with class-balanced batches or with shuffled batches and a class-weighted loss
(01's recipe sampler); against EfficientNet-B0 from scratch (01's recipe study), and to choose what the quick profile's teacher
costs.

    python scripts/synthetic_teacher.py --jobs 2       # every variant not yet in the results, two at a time (one thread each)
    python scripts/synthetic_teacher.py --table

Needs the quick profile's data: `fabguard study --profile quick --until 00_data` (artifacts/synthetic-quick).
Results go to reports/synthetic/teacher_study/results.jsonl, one JSON line per variant, written by the run that measured it.
"""
import sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from variant_study import append_result, main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "reports" / "synthetic" / "teacher_study"
BASE = dict(arch="efficientnet_lite0", size=64, bs=16, epochs=2, recipe={}, seed=0)
VARIANTS = {f"lite0, {e} epochs, {s}": dict(BASE, epochs=e, recipe={"sampler": s}) for e in (3, 2) for s in ("class-weighted", "class-balanced")}


def run_one(name, threads=1):
    "Fine-tune one variant on the quick data and append its result line."
    import torch
    from fabguard.bench import machine_info
    from fabguard.data import get_augment, load_scan, load_tensors
    from fabguard.train import (arch_normalization, compute_metrics, fit, get_recipe, make_meta, predict_logits, recipe_model,
                                seed_everything)
    cfg = VARIANTS[name]; torch.set_num_threads(threads)
    run_dir = ROOT / "artifacts" / "synthetic-quick"
    scan = load_scan(run_dir); d = load_tensors(scan, cfg["size"], run_dir / "cache", progress=False)
    r = dict(get_recipe("finetune"), **cfg["recipe"]); mean, std = arch_normalization(cfg["arch"])
    seed_everything(cfg["seed"]); m = recipe_model(cfg["arch"], len(scan.classes), r, pretrained=True)
    meta = make_meta(cfg["arch"], scan.classes, cfg["size"], scan.hash, mean, std, pretrained=True)
    with tempfile.TemporaryDirectory() as t:
        h = fit(m, d, Path(t) / "m.pt", meta, recipe=r, epochs=cfg["epochs"], batch_size=cfg["bs"], patience=10 ** 6,
                augment=get_augment("seed"), seed=cfg["seed"], progress=False)
    test = compute_metrics(d["test"][1], predict_logits(m, d["test"][0], mean, std, batch_size=128), scan.classes)
    keep = ("epoch", "train_acc", "val_acc", "val_macro_f1", "elapsed_s", "lr", "images_per_s")
    res = dict(variant=name, settings=cfg, n_train=len(d["train"][1]), best_epoch=h["best_epoch"], best_val_macro_f1=h["best_val_macro_f1"],
               test_macro_f1_of_best=test["macro_f1"], test_acc_of_best=test["accuracy"], train_seconds=h["train_seconds"],
               threads=threads, cpu=machine_info()["cpu"], torch=torch.__version__, data_hash=scan.hash,
               created=time.strftime("%Y-%m-%dT%H:%M:%S"), history=[{k: x[k] for k in keep} for x in h["history"]])
    append_result(OUT, res)
    print(f"{name}: best val macro-F1 {res['best_val_macro_f1']:.3f}, test {res['test_macro_f1_of_best']:.3f} in {res['train_seconds']:.0f} s", flush=True)


RECIPE_STUDY = ROOT / "reports" / "synthetic" / "recipe_study"


def b0_scratch() -> str:
    "The yardstick, read from 01's recipe study: EfficientNet-B0 from scratch with the budget recipe the quick profile's teacher used before (batch 16)."
    from variant_study import load_results
    r = load_results(RECIPE_STUDY).get("budget, batch 16")
    if r is None: return "EfficientNet-B0 from scratch: not in reports/synthetic/recipe_study yet"
    return (f"EfficientNet-B0 from scratch (reports/synthetic/recipe_study, budget recipe, batch 16, {r['samples'] // r['n_train']} epochs): "
            f"best val macro-F1 {r['best_val_macro_f1']:.3f} in {r['train_seconds']:.0f} s on {r['threads']} thread")


def finding(res:dict) -> str:
    "Which fine-tuned variants pass B0-from-scratch's best validation macro-F1, and in what share of its training time (both at one thread)."
    from variant_study import load_results
    b0 = load_results(RECIPE_STUDY).get("budget, batch 16")
    if b0 is None or not res: return ""
    ok = sorted((r for r in res.values() if r["best_val_macro_f1"] >= b0["best_val_macro_f1"]), key=lambda r: r["train_seconds"])
    if not ok: return f"No fine-tuned variant reaches B0-from-scratch's best validation macro-F1 ({b0['best_val_macro_f1']:.3f})."
    f = ok[0]
    return (f"Every variant that reaches B0-from-scratch's best validation macro-F1 ({b0['best_val_macro_f1']:.3f}): "
            + ", ".join(f"{r['variant']} ({r['best_val_macro_f1']:.3f})" for r in ok)
            + f". The cheapest, {f['variant']}, trains in {f['train_seconds']:.0f} s, {f['train_seconds'] / b0['train_seconds']:.0%} of B0's {b0['train_seconds']:.0f} s.")


def write_readme(res:dict):
    "reports/synthetic/teacher_study/README.md: the table from results.jsonl alone."
    rows = ["| variant | epochs | batches | best val macro-F1 (epoch) | test macro-F1 of those weights | training s (1 thread) | run on |",
            "|---|---|---|---|---|---|---|"]
    for r in sorted(res.values(), key=lambda r: (r["settings"]["epochs"], r["variant"])):
        s = r["settings"]
        rows.append(f"| {r['variant']} | {s['epochs']} | {s['recipe'].get('sampler', 'class-balanced')} | {r['best_val_macro_f1']:.3f} ({r['best_epoch']}) | "
                    f"{r['test_macro_f1_of_best']:.3f} | {r['train_seconds']:.0f} | {r['cpu']} |")
    md = ["# The pretrained teacher on the synthetic data", "", __doc__.split("\n\n")[0].replace("\n", " "), "",
          f"Written by `python scripts/synthetic_teacher.py --table` from `results.jsonl` ({len(res)} variants); the yardstick: {b0_scratch()}.", "",
          "\n".join(rows), "", finding(res), "", "Every variant: seed 0, one thread (two variants at a time on this 2-core machine, so seconds are under load), "
          "the weights of the best validation epoch.", ""]
    OUT.mkdir(parents=True, exist_ok=True); (OUT / "README.md").write_text("\n".join(md))


if __name__ == "__main__":
    main(__file__, __doc__, VARIANTS, OUT, run_one, lambda res: (write_readme(res), print((OUT / "README.md").read_text())))
