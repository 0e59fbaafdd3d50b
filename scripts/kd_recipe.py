"""The distillation recipe study (issue "A pretrained teacher ... patient distillation"): does the quick synthetic study's
distilled student gain on its scratch twin when distillation is done as Beyer et al. 2022 ("Knowledge distillation: a good
teacher is patient and consistent") do it: the teacher and the student see the same view (the cached views of 02 already
are), the views are aggressive (function matching: every view mixed with a partner image, mixup, `distill.mixup_views`),
and the schedule is long? Each variant trains the seed student (MobileNetV3-Small) distilled from the quick study's
EfficientNet-Lite0 teacher and its scratch twin on the same views, with everything else as 02's quick profile (6 views drawn
from the pair's seed, budget recipe, batch 64, peak lr 4e-3, T = 4, alpha = 0.7 unless a variant says otherwise, no early
stopping), on seeds 0 and 1.

    python scripts/kd_recipe.py --jobs 2     # every variant not yet in the results, two at a time (one thread each)
    python scripts/kd_recipe.py --table      # the markdown table (and the page) from the results

Needs the quick synthetic study's run directory (`fabguard study --profile quick --until 01_teacher`). Results go to
reports/synthetic/kd_recipe/results.jsonl, one JSON line per variant, written by the run that measured it. Validation
chooses the weights; test is recorded for the comparison.
"""
import os, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from variant_study import append_result, main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "artifacts" / "synthetic-quick"
OUT = ROOT / "reports" / "synthetic" / "kd_recipe"
RECIPES = {"views": dict(mixup=0.0), "function matching": dict(mixup=1.0)}
VARIANTS = {f"{r}, {k}, {e} epochs, seed {s}": dict(c, kd=k == "distilled", epochs=e, seed=s, T=4.0)
            for e in (8, 24) for s in (0, 1) for r, c in RECIPES.items() for k in ("distilled", "scratch")}  # the quick budget first
KEEP = ("epoch", "train_acc", "val_macro_f1", "elapsed_s")


def _setup(mixup:float, seed:int):
    "The quick study's data and teacher, the pair's views (mixed or not) and the teacher's logits on them (cached in the run directory)."
    import torch
    from fabguard.data import SEED_AUGMENT, load_scan, load_tensors
    from fabguard.distill import make_views, mixup_views, view_logits
    from fabguard.files import sha256_file
    from fabguard.train import load_checkpoint, make_meta
    if not (RUN / "teacher.pt").is_file(): sys.exit(f"{RUN}: no quick synthetic study here (no teacher.pt); run `make study` first")
    scan = load_scan(RUN); data = load_tensors(scan, 64, RUN / "cache", progress=False)
    teacher, tm = load_checkpoint(RUN / "teacher.pt", classes=scan.classes)
    meta = make_meta("mobilenet_v3_small", scan.classes, 64, scan.hash, good_class=scan.good_class,
                     teacher={"arch": tm["arch"], "epoch": tm["epoch"], "sha256": sha256_file(RUN / "teacher.pt")})
    cache = RUN / f"kd_recipe_views_seed{seed}_mix{mixup:g}.pt"
    if cache.exists(): v = torch.load(cache, weights_only=True)
    else:
        views, targets = make_views(data["train"][0], 6, augment=SEED_AUGMENT, seed=seed), None
        if mixup: views, targets = mixup_views(views, data["train"][1], len(scan.classes), mixup, seed=seed)
        v = {"views": views, "logits": view_logits(teacher, views, tm["mean"], tm["std"], 256), "targets": targets}
        tmp = cache.with_suffix(f".{os.getpid()}.tmp"); torch.save(v, tmp); tmp.replace(cache)
    return scan, data, meta, v


def _cpu() -> str:
    "The processor's model name: a teacher trained on another CPU (same lock) is another teacher, its float sums in another order."
    from fabguard.bench import machine_info
    return machine_info()["cpu"]


def run_one(name, threads=1):
    "Train one variant as 02 does and append its result line."
    import torch
    from fabguard.data import SEED_AUGMENT
    from fabguard.distill import train_student
    from fabguard.train import compute_metrics, get_recipe, predict_logits
    cfg = VARIANTS[name]; torch.set_num_threads(threads)
    scan, data, meta, v = _setup(cfg["mixup"], cfg["seed"])
    with tempfile.TemporaryDirectory() as t:
        m, h = train_student(data, Path(t) / "s.pt", meta, T=cfg["T"], alpha=0.7, seed=cfg["seed"], recipe=dict(get_recipe("budget"), lr=0.004),
                             views=(v["views"], v["logits"] if cfg["kd"] else None, v["targets"]), epochs=cfg["epochs"], batch_size=64,
                             patience=10 ** 6, augment=SEED_AUGMENT, progress=False)
    test = compute_metrics(data["test"][1], predict_logits(m, data["test"][0], batch_size=256), scan.classes)
    best = max(h["history"], key=lambda x: x["val_macro_f1"])
    res = dict(variant=name, settings=cfg, best_epoch=best["epoch"], best_val_macro_f1=best["val_macro_f1"], test_macro_f1_of_best=test["macro_f1"],
               test_pred=predict_logits(m, data["test"][0], batch_size=256).argmax(1).tolist(), train_seconds=h["train_seconds"], threads=threads,
               cpu_count=os.cpu_count(), cpu=_cpu(), teacher_sha256=meta["teacher"]["sha256"], torch=torch.__version__,
               created=time.strftime("%Y-%m-%dT%H:%M:%S"), history=[{k: x[k] for k in KEEP} for x in h["history"]])
    append_result(OUT, res)
    print(f"{name}: best val macro-F1 {res['best_val_macro_f1']:.3f} (epoch {res['best_epoch']}), test {res['test_macro_f1_of_best']:.3f}, "
          f"{res['train_seconds']:.0f} s", flush=True)


def table(res:dict) -> str:
    "The markdown table of every variant, and the page (README.md) with distilled minus scratch per recipe and schedule."
    import numpy as np
    from fabguard.data import load_scan
    from fabguard.distill import interval_sentence, run_interval
    rows = ["| recipe | teacher term | epochs | seed | best val macro-F1 (epoch) | test macro-F1 | training s (1 thread) | teacher.pt sha256 | run on |",
            "|---|---|---|---|---|---|---|---|---|"]
    import json
    committed = json.loads((ROOT / "reports" / "synthetic" / "quick" / "metrics.json").read_text())["models"]["teacher_torch"]["sha256"]
    mine = " (the committed quick report's)"
    for r in sorted(res.values(), key=lambda r: (r["settings"]["mixup"], r["settings"]["epochs"], not r["settings"]["kd"], r["settings"]["seed"])):
        s = r["settings"]
        rows.append(f"| {'function matching (mixup)' if s['mixup'] else 'views'} | {'distilled' if s['kd'] else 'scratch'} | {s['epochs']} | {s['seed']} | "
                    f"{r['best_val_macro_f1']:.3f} ({r['best_epoch']}) | {r['test_macro_f1_of_best']:.3f} | {r['train_seconds']:.0f} | "
                    f"{r.get('teacher_sha256', '?')[:8]}{mine if r.get('teacher_sha256') == committed else ''} | {r.get('cpu', '?')} |")
    says = []
    from fabguard.data import load_tensors
    scan = load_scan(RUN); y = load_tensors(scan, 64, RUN / "cache", progress=False)["test"][1].numpy()
    for rname in RECIPES:
        for e in (8, 24):
            pairs = [(res.get(f"{rname}, distilled, {e} epochs, seed {s}"), res.get(f"{rname}, scratch, {e} epochs, seed {s}")) for s in (0, 1)]
            pairs = [(a, b) for a, b in pairs if a and b]
            if not pairs: continue
            d = run_interval(y, [np.array(a["test_pred"]) for a, _ in pairs], [np.array(b["test_pred"]) for _, b in pairs], len(scan.classes))
            per = ", ".join(f"{a['test_macro_f1_of_best'] - b['test_macro_f1_of_best']:+.3f}" for a, b in pairs)
            says.append(f"{rname}, {e} epochs (per seed {per}): " + interval_sentence(d, "distilled minus scratch", "distillation helped", "distillation hurt"))
    md = "\n".join(rows)
    page = ["# The distillation recipe study", "", f"Written by `python scripts/kd_recipe.py --table` from `results.jsonl` ({len(res)} variants).", "",
            __doc__.split("\n\n")[0].replace("\n", " "), "", md, "", "## What it says", ""] + [f"- {s}" for s in says] + [""]
    OUT.mkdir(parents=True, exist_ok=True); (OUT / "README.md").write_text("\n".join(page))
    return md + "\n\n" + "\n".join(says)


if __name__ == "__main__":
    main(__file__, __doc__, VARIANTS, OUT, run_one, lambda res: print(table(res)))
