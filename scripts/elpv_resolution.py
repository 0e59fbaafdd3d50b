"""ELPV's resolution study (issue: "ELPV: beat Deitsch et al. 2019"): the same MobileNetV3-Small, trained from scratch with the
budget recipe and the ELPV paper's augmentation, at several training resolutions; validation accuracy per epoch and training
seconds say which resolution the `[quick.elpv]` profile overlay uses and how accuracy grows with time.

    python scripts/elpv_resolution.py --jobs 2            # every variant not yet in the results, two at a time (one thread each)
    python scripts/elpv_resolution.py --only "elpv2 160 px"
    python scripts/elpv_resolution.py --table             # the markdown table and figure from the results

Results go to reports/elpv2/resolution_study/results.jsonl, one JSON line per variant, written by the run that measured it.
Resolution is chosen on validation; the test accuracy of each variant's best-validation weights is recorded for the bound only.
"""
import os, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from variant_study import append_result, load_results, main, one_standard_error  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "reports" / "elpv2" / "resolution_study"
# name -> settings; every variant: MobileNetV3-Small from scratch, budget recipe, ELPV augmentation, class-balanced batches
BASE = dict(task="elpv2", arch="mobilenet_v3_small", bs=32, epochs=30, lr=2e-3, recipe={})
VARIANTS = {f"elpv2 {px} px": dict(BASE, size=px) for px in (224, 64, 128, 160)}  # the longest first: two jobs end together
# is the budget the bound? the cheapest resolution with more steps, a higher peak learning rate, or less regularization
VARIANTS |= {"elpv2 64 px, 90 epochs": dict(BASE, size=64, epochs=90),
             "elpv2 64 px, peak lr 8e-3": dict(BASE, size=64, lr=8e-3),
             "elpv2 64 px, no weight decay or dropout": dict(BASE, size=64, recipe={"weight_decay": 0.0, "dropout": 0.0})}


def run_one(name, threads=1):
    "Train one variant and append its result line."
    import torch
    from fabguard.data import ELPV_AUGMENT, load_tensors, prepare_dataset
    from fabguard.train import compute_metrics, fit, get_recipe, make_meta, predict_logits, recipe_model, seed_everything
    cfg = VARIANTS[name]; torch.set_num_threads(threads)
    run_dir = ROOT / "artifacts" / f"{cfg['task']}-resolution"
    scan = prepare_dataset(cfg["task"], run_dir, progress=False)
    d = load_tensors(scan, cfg["size"], run_dir / "cache", progress=False)
    r = dict(get_recipe("budget"), lr=cfg["lr"], **cfg["recipe"])
    seed_everything(0); m = recipe_model(cfg["arch"], len(scan.classes), r)
    meta = make_meta(cfg["arch"], scan.classes, cfg["size"], scan.hash)
    with tempfile.TemporaryDirectory() as t:
        h = fit(m, d, Path(t) / "m.pt", meta, recipe=r, epochs=cfg["epochs"], batch_size=cfg["bs"], patience=10 ** 6,
                augment=ELPV_AUGMENT, progress=False)
    test = compute_metrics(d["test"][1], predict_logits(m, d["test"][0], batch_size=128), scan.classes)
    keep = ("epoch", "train_acc", "val_acc", "val_macro_f1", "elapsed_s", "lr", "images_per_s")
    res = dict(variant=name, settings=cfg, n_train=len(d["train"][1]), best_epoch=h["best_epoch"],
               best_val_macro_f1=h["best_val_macro_f1"], best_val_acc=h["history"][h["best_epoch"] - 1]["val_acc"],
               test_acc_of_best=test["accuracy"], test_macro_f1_of_best=test["macro_f1"],
               train_seconds=h["train_seconds"], threads=threads, cpu_count=os.cpu_count(), created=time.strftime("%Y-%m-%dT%H:%M:%S"),
               history=[{k: x[k] for k in keep} for x in h["history"]])
    append_result(OUT, res)
    print(f"{name}: best val accuracy {res['best_val_acc']:.3f} (epoch {res['best_epoch']}) in {res['train_seconds']:.0f} s", flush=True)


def results() -> dict: return load_results(OUT)


def table(res:dict) -> str:
    "Markdown table by resolution, and the accuracy-versus-time figure."
    rows = ["| variant | px | epochs | final train accuracy | best val accuracy (epoch) | val macro-F1 | test accuracy of those weights | training s (1 thread) |",
            "|---|---|---|---|---|---|---|---|"]
    for r in sorted(res.values(), key=lambda r: (r["settings"]["size"], r["variant"])):
        s = r["settings"]
        rows.append(f"| {r['variant']} | {s['size']} | {s['epochs']} | {r['history'][-1]['train_acc']:.3f} | {r['best_val_acc']:.3f} ({r['best_epoch']}) | {r['best_val_macro_f1']:.3f} | "
                    f"{r['test_acc_of_best']:.3f} | {r['train_seconds']:.0f} |")
    import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in sorted(res.values(), key=lambda r: (r["settings"]["size"], r["variant"])):
        ax.plot([h["elapsed_s"] / 60 for h in r["history"]], [h["val_acc"] for h in r["history"]], "o-", ms=2, label=r["variant"])
    from fabguard.bench import ELPV_REFERENCES
    ref = ELPV_REFERENCES[0]
    ax.axhline(ref["accuracy"], color="k", ls=":", lw=1, label=f"{ref['short']}, Deitsch et al. 2019 (test)")
    ax.set_xlabel("training minutes (one thread)"); ax.set_ylabel("validation accuracy"); ax.legend(fontsize=7)
    ax.set_title("MobileNetV3-Small from scratch on ELPV: accuracy vs training time"); fig.tight_layout()
    fig.savefig(OUT / "accuracy_vs_time.png", dpi=110)
    return "\n".join(rows)


def choose(res:dict) -> str:
    "The one-standard-error rule on validation accuracy over the resolution variants (same recipe, 30 epochs): the cheapest whose best is within one binomial standard error of the best."
    rs = {k: r for k, r in res.items() if k == f"elpv2 {r['settings']['size']} px"}
    from fabguard.data import elpv_scan
    n_val = sum(i["split"] == "val" for i in elpv_scan("elpv2", progress=False).items)  # the split every variant validated on
    best, se, ok = one_standard_error(list(rs.values()), n_val)
    pick = ok[0]
    return (f"Best validation accuracy: {best['best_val_acc']:.3f} at {best['settings']['size']} px (one standard error: {se:.3f}). "
            f"Within one standard error of it: " + ", ".join(f"{r['settings']['size']} px ({r['best_val_acc']:.3f}, {r['train_seconds']:.0f} s)" for r in ok)
            + f". The cheapest of those, {pick['settings']['size']} px, is the `[quick.elpv]` resolution: the time it saves buys epochs.")


def write_readme(res:dict):
    "reports/elpv2/resolution_study/README.md: the table, the choice and the figure, from results.jsonl alone."
    md = ["# ELPV resolution study", "", __doc__.split("\n\n")[0].replace("\n", " "), "", table(res), "", choose(res), "",
          "Every variant: MobileNetV3-Small from scratch, budget recipe, batch 32, the ELPV paper's augmentation, class-balanced batches, "
          "one thread per variant (two variants at a time on this 2-core machine, so seconds are under load). "
          "Final train accuracy is on augmented, class-balanced batches.", "", "![accuracy versus time](accuracy_vs_time.png)", ""]
    (OUT / "README.md").write_text("\n".join(md))


if __name__ == "__main__":
    main(__file__, __doc__, VARIANTS, OUT, run_one, lambda res: (write_readme(res), print((OUT / "README.md").read_text())))
