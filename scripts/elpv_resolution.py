"""ELPV's resolution study (issue: "ELPV: beat Deitsch et al. 2019"): the same MobileNetV3-Small, trained from scratch with the
budget recipe and the ELPV paper's augmentation, at several training resolutions; validation accuracy per epoch and training
seconds say which resolution the `[quick.elpv]` profile overlay uses and how accuracy grows with time.

    python scripts/elpv_resolution.py --jobs 2            # every variant not yet in the results, two at a time (one thread each)
    python scripts/elpv_resolution.py --only "elpv2 160 px"
    python scripts/elpv_resolution.py --table             # the markdown table and figure from the results

Results go to reports/elpv2/resolution_study/results.jsonl, one JSON line per variant, written by the run that measured it.
Resolution is chosen on validation; the test accuracy of each variant's best-validation weights is recorded for the bound only.
"""
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "reports" / "elpv2" / "resolution_study"
# name -> settings; every variant: MobileNetV3-Small from scratch, budget recipe, ELPV augmentation, class-balanced batches
VARIANTS = {f"{task} {px} px": dict(task=task, size=px, arch="mobilenet_v3_small", bs=32, epochs=30, lr=2e-3)
            for task in ("elpv2",) for px in (224, 64, 128, 160)}  # the longest first: two jobs end together


def run_one(name, threads=1):
    "Train one variant and append its result line."
    import torch
    from fabguard.data import ELPV_AUGMENT, load_tensors, prepare_dataset
    from fabguard.train import compute_metrics, fit, get_recipe, make_meta, predict_logits, recipe_model, seed_everything
    cfg = VARIANTS[name]; torch.set_num_threads(threads)
    run_dir = ROOT / "artifacts" / f"{cfg['task']}-resolution"
    scan = prepare_dataset(cfg["task"], run_dir, progress=False)
    d = load_tensors(scan, cfg["size"], run_dir / "cache", progress=False)
    r = dict(get_recipe("budget"), lr=cfg["lr"])
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
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / "results.jsonl", "a") as f: f.write(json.dumps(res) + "\n")
    print(f"{name}: best val accuracy {res['best_val_acc']:.3f} (epoch {res['best_epoch']}) in {res['train_seconds']:.0f} s", flush=True)


def results() -> dict:
    p = OUT / "results.jsonl"
    return {r["variant"]: r for r in map(json.loads, p.read_text().splitlines())} if p.exists() else {}


def table(res:dict) -> str:
    "Markdown table by resolution, and the accuracy-versus-time figure."
    rows = ["| task | px | epochs | best val accuracy (epoch) | val macro-F1 | test accuracy of those weights | training s (1 thread) |",
            "|---|---|---|---|---|---|---|"]
    for r in sorted(res.values(), key=lambda r: (r["settings"]["task"], r["settings"]["size"])):
        s = r["settings"]
        rows.append(f"| {s['task']} | {s['size']} | {s['epochs']} | {r['best_val_acc']:.3f} ({r['best_epoch']}) | {r['best_val_macro_f1']:.3f} | "
                    f"{r['test_acc_of_best']:.3f} | {r['train_seconds']:.0f} |")
    import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in sorted(res.values(), key=lambda r: r["settings"]["size"]):
        ax.plot([h["elapsed_s"] / 60 for h in r["history"]], [h["val_acc"] for h in r["history"]], "o-", ms=2, label=r["variant"])
    ax.axhline(0.8842, color="k", ls=":", lw=1, label="Deitsch et al. VGG-19 (test)")
    ax.set_xlabel("training minutes (one thread)"); ax.set_ylabel("validation accuracy"); ax.legend(fontsize=7)
    ax.set_title("MobileNetV3-Small from scratch on ELPV: accuracy vs training time"); fig.tight_layout()
    fig.savefig(OUT / "accuracy_vs_time.png", dpi=110)
    return "\n".join(rows)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", help="variant names (default: all not yet measured)")
    ap.add_argument("--jobs", type=int, default=2, help="variants trained at once, one thread each")
    ap.add_argument("--table", action="store_true", help="print the table of the results so far (and write the figure)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child: run_one(a.child); sys.exit(0)
    if a.table: print(table(results())); sys.exit(0)
    todo = [n for n in (a.only or VARIANTS) if n not in results()]
    unknown = [n for n in todo if n not in VARIANTS]
    if unknown: sys.exit(f"elpv_resolution: unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    running = []
    while todo or running:
        while todo and len(running) < a.jobs:
            n = todo.pop(0); print(f"start: {n}", flush=True)
            running.append(subprocess.Popen([sys.executable, __file__, "--child", n], env=env))
        time.sleep(5)
        for p in [p for p in running if p.poll() is not None]:
            running.remove(p)
            if p.returncode: print(f"a variant failed with exit {p.returncode}", flush=True)
