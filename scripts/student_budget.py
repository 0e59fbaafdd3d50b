"""The student budget study (issues "A distillation ablation that answers its question" and "INT8 that pays off"): what do
more epochs buy the students of the quick synthetic study? The seed student (MobileNetV3-Small) and the minimalistic one,
each distilled from the quick study's teacher and trained from scratch, at the quick profile's 18 epochs and at 3x that,
with everything else as in 02 (seed 0, the same 6 cached views scored by the teacher, budget recipe, batch 64, peak lr
4e-3, T = 4, alpha = 0.7, no early stopping).

    python scripts/student_budget.py --jobs 2     # every variant not yet in the results, two at a time (one thread each)
    python scripts/student_budget.py --table      # the markdown table and figure from the results
    python scripts/student_budget.py --ingest "distilled, 18 epochs" artifacts/synthetic-quick/student.pt
                                                  # a variant some run already trained with exactly these settings (the
                                                  # study's seed-0 pair is one): history from its checkpoints, test scored here

Needs the quick synthetic study's run directory (`make study`). Results go to reports/synthetic/student_budget/results.jsonl,
one JSON line per variant, written by the run that measured it. Validation chooses; test is recorded for the bound only.
"""
import json, os, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from variant_study import append_result, main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "artifacts" / "synthetic-quick"
OUT = ROOT / "reports" / "synthetic" / "student_budget"
ARCHS = {"": "mobilenet_v3_small", "minimalistic ": "mobilenet_v3_small_minimal"}
VARIANTS = {f"{a}{k}, {e} epochs": dict(arch=arch, kd=k == "distilled", epochs=e)
            for e in (54, 18) for a, arch in ARCHS.items() for k in ("distilled", "scratch")}  # the longest first
KEEP = ("epoch", "train_acc", "val_macro_f1", "elapsed_s")


def _setup():
    "The quick study's data, teacher and the 6 views with the teacher's logits (computed once, then read from the run directory)."
    import torch
    from fabguard.data import SEED_AUGMENT, load_scan, load_tensors
    from fabguard.distill import make_views, view_logits
    from fabguard.files import sha256_file
    from fabguard.train import load_checkpoint, make_meta
    if not (RUN / "teacher.pt").is_file(): sys.exit(f"{RUN}: no quick synthetic study here (no teacher.pt); run `make study` first")
    scan = load_scan(RUN); data = load_tensors(scan, 64, RUN / "cache", progress=False)
    teacher, tm = load_checkpoint(RUN / "teacher.pt", classes=scan.classes)
    meta = make_meta("mobilenet_v3_small", scan.classes, 64, scan.hash, good_class=scan.good_class,
                     teacher={"arch": tm["arch"], "epoch": tm["epoch"], "sha256": sha256_file(RUN / "teacher.pt")})
    cache = RUN / "student_budget_views.pt"
    if cache.exists(): v = torch.load(cache, weights_only=True); views, logits = v["views"], v["logits"]
    else:
        views = make_views(data["train"][0], 6, augment=SEED_AUGMENT, seed=0)
        logits = view_logits(teacher, views, tm["mean"], tm["std"], 256)
        torch.save({"views": views, "logits": logits}, cache)
    return scan, data, teacher, tm, meta, views, logits


def _record(name, model, history, train_seconds, data, scan, **extra):
    from fabguard.train import compute_metrics, predict_logits
    test = compute_metrics(data["test"][1], predict_logits(model, data["test"][0], batch_size=256), scan.classes)
    best = max(history, key=lambda x: x["val_macro_f1"])
    res = dict(variant=name, settings=VARIANTS[name], best_epoch=best["epoch"], best_val_macro_f1=best["val_macro_f1"],
               test_macro_f1_of_best=test["macro_f1"], train_seconds=train_seconds, cpu_count=os.cpu_count(),
               created=time.strftime("%Y-%m-%dT%H:%M:%S"), history=[{k: x[k] for k in KEEP} for x in history], **extra)
    append_result(OUT, res)
    print(f"{name}: best val macro-F1 {res['best_val_macro_f1']:.3f} (epoch {res['best_epoch']}), test {res['test_macro_f1_of_best']:.3f}, "
          f"{train_seconds:.0f} s", flush=True)


def run_one(name, threads=1):
    "Train one variant as 02 does and append its result line."
    import torch
    from fabguard.data import SEED_AUGMENT
    from fabguard.distill import train_student
    from fabguard.train import get_recipe
    cfg = VARIANTS[name]; torch.set_num_threads(threads)
    scan, data, teacher, tm, meta, views, logits = _setup()
    with tempfile.TemporaryDirectory() as t:
        m, h = train_student(data, Path(t) / "s.pt", meta, T=4.0, alpha=0.7, seed=0, arch=cfg["arch"], recipe=dict(get_recipe("budget"), lr=0.004),
                             views=(views, logits if cfg["kd"] else None), epochs=cfg["epochs"], batch_size=64, patience=10 ** 6,
                             augment=SEED_AUGMENT, progress=False)
    _record(name, m, h["history"], h["train_seconds"], data, scan, threads=threads, trained_by="scripts/student_budget.py")


def ingest(name, ckpt):
    "A variant an earlier run trained with exactly these settings: its checkpoints' history and recipe, checked, and its test score measured here."
    import torch
    from fabguard.train import load_checkpoint
    if name not in VARIANTS: sys.exit(f"--ingest {name!r}: not a variant; choose from {list(VARIANTS)}")
    cfg, ckpt = VARIANTS[name], Path(ckpt)
    for f in (ckpt, ckpt.with_name(ckpt.stem + "_last.pt")):
        if not f.is_file(): sys.exit(f"{f}: no such checkpoint (--ingest needs the best weights and their _last.pt, which holds the history)")
    scan, data, *_ = _setup()
    model, meta = load_checkpoint(ckpt, classes=scan.classes)
    last = torch.load(ckpt.with_name(ckpt.stem + "_last.pt"), weights_only=True, map_location="cpu")
    c, hist = last["config"], last["state"]["history"]; r = c["recipe"]
    from fabguard.files import sha256_file
    want = dict(arch=cfg["arch"], epochs=cfg["epochs"], batch_size=64, lr=0.004, seed=0, views=6, loss="distillation" if cfg["kd"] else "cross_entropy",
                teacher=sha256_file(RUN / "teacher.pt"), data=scan.hash)
    got = dict(arch=c["arch"], epochs=r["epochs"], batch_size=r["batch_size"], lr=r["lr"], seed=r["seed"], views=c.get("views"), loss=r["loss"],
               teacher=c["extra"]["teacher"]["sha256"], data=c["data_hash"])
    if got != want: sys.exit(f"{ckpt}: trained with {got}, not the settings of {name!r} ({want})")
    _record(name, model, hist, sum(x["seconds"] for x in hist), data, scan, patience=r["patience"],
            trained_by=f"an earlier run with these settings: {ckpt} (sha256 {sha256_file(ckpt)[:12]})")


def table(res:dict) -> str:
    "Markdown table and the validation-versus-time figure."
    import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
    tm = json.loads((RUN / "teacher_metrics.json").read_text()) if (RUN / "teacher_metrics.json").exists() else {}
    t_test = tm.get("test", {}).get("macro_f1")
    rows = ["| student | teacher term | epochs | best val macro-F1 (epoch) | test macro-F1 of those weights | vs teacher's test | training s (1 thread) |",
            "|---|---|---|---|---|---|---|"]
    for r in sorted(res.values(), key=lambda r: (r["settings"]["arch"], not r["settings"]["kd"], r["settings"]["epochs"])):
        s = r["settings"]
        rows.append(f"| {s['arch']} | {'distilled' if s['kd'] else 'scratch'} | {s['epochs']} | {r['best_val_macro_f1']:.3f} ({r['best_epoch']}) | "
                    f"{r['test_macro_f1_of_best']:.3f} | " + (f"{r['test_macro_f1_of_best'] - t_test:+.3f}" if t_test else "-") + f" | {r['train_seconds']:.0f} |")
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in res.values():
        h = r["history"]; ax.plot([x["elapsed_s"] for x in h], [x["val_macro_f1"] for x in h], label=r["variant"], lw=1.2)
    if tm.get("val", {}).get("macro_f1"): ax.axhline(tm["val"]["macro_f1"], color="k", ls="--", lw=0.8, label="teacher (val)")
    ax.set(xlabel="training seconds (1 thread, two jobs at once)", ylabel="validation macro-F1", ylim=(0.4, 1.0)); ax.legend(fontsize=7); ax.grid(alpha=0.3)
    fig.tight_layout(); fig.savefig(OUT / "student_budget.png", dpi=110)
    md = "\n".join(rows)
    (OUT / "README.md").write_text(readme(res, md, t_test))
    return md


def readme(res, md, t_test) -> str:
    "The study's page: what was run, the table, and what it says, written from the numbers."
    g = lambda a, kd, e: next((r for r in res.values() if r["settings"] == dict(arch=a, kd=kd, epochs=e)), None)
    lines = ["# The student budget study", "", f"Written by `python scripts/student_budget.py --table` from `results.jsonl` ({len(res)} variants).",
             __doc__.split("\n\n")[0].replace("\n", " "), "", md, "", "![Validation macro-F1 against training time](student_budget.png)", ""]
    says = []
    for a, who in (("mobilenet_v3_small", "The seed student"), ("mobilenet_v3_small_minimal", "The minimalistic student")):
        for kd in (True, False):
            lo, hi = g(a, kd, 18), g(a, kd, 54)
            if lo and hi:
                says.append(f"{who}, {'distilled' if kd else 'from scratch'}: 18 -> 54 epochs moves test macro-F1 from {lo['test_macro_f1_of_best']:.3f} to "
                            f"{hi['test_macro_f1_of_best']:.3f} ({hi['test_macro_f1_of_best'] - lo['test_macro_f1_of_best']:+.3f}) and best validation from "
                            f"{lo['best_val_macro_f1']:.3f} to {hi['best_val_macro_f1']:.3f}, for {hi['train_seconds'] / lo['train_seconds']:.1f}x the training time.")
    for a, who in (("mobilenet_v3_small", "seed student"), ("mobilenet_v3_small_minimal", "minimalistic student")):
        d = [(e, g(a, True, e), g(a, False, e)) for e in (18, 54)]
        d = [f"{e} epochs {kd['test_macro_f1_of_best'] - sc['test_macro_f1_of_best']:+.3f} on test, {kd['best_val_macro_f1'] - sc['best_val_macro_f1']:+.3f} "
             "on validation" for e, kd, sc in d if kd and sc]
        if d: says.append(f"Distilled minus scratch, {who} (one seed): " + "; ".join(d) + ".")
    kd = g("mobilenet_v3_small", True, 54)
    if kd and t_test:
        gap = kd["test_macro_f1_of_best"] - t_test
        says.append(f"The distilled seed student at 54 epochs is {gap:+.3f} test macro-F1 from the teacher ({t_test:.3f}): "
                    + ("within" if gap >= -0.02 else "not within") + " 2 points.")
    mk, m18 = g("mobilenet_v3_small_minimal", True, 54), g("mobilenet_v3_small", True, 18)
    if mk and m18:
        says.append(f"The minimalistic student distilled for 54 epochs scores {mk['test_macro_f1_of_best']:.3f} test macro-F1, "
                    f"{mk['test_macro_f1_of_best'] - m18['test_macro_f1_of_best']:+.3f} against the seed student at the quick profile's 18 epochs, "
                    f"in {mk['train_seconds']:.0f} s against {m18['train_seconds']:.0f} s.")
    return "\n".join(lines + ["## What it says", ""] + [f"- {s}" for s in says] + [""])


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--ingest": ingest(sys.argv[2], sys.argv[3])
    else: main(__file__, __doc__, VARIANTS, OUT, run_one, lambda res: print(table(res)))
