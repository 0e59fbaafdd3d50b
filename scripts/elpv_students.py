"""The ELPV student study (issue "A pretrained teacher ... and ELPV above the paper"): what stands between the pretrained
teacher and the students on elpv2? The elpv2 quick report's students stop early (patience 10 on a noisy validation
macro-F1) short of the teacher (its report's accuracy table). Each variant trains the seed student (MobileNetV3-Small) from scratch,
distilled from the elpv2 quick study's EfficientNet-Lite0 teacher or without it, on the same 8 cached views (flips and quarter
turns, drawn from seed 0, as 02 draws them), with everything else as 02's `[quick.elpv]` (budget recipe, batch 32, peak lr
2e-3, T = 4, alpha = 0.7) but a patient schedule and no early stopping; the weights of the best validation macro-F1 are
scored on test with both decision rules (01: as trained, and with the training prior added, the study's rule on ELPV).

    python scripts/elpv_students.py --jobs 2     # every variant not yet in the results, two at a time (one thread each)
    python scripts/elpv_students.py --table      # the markdown table (and the page) from the results

Needs the elpv2 quick study's run directory (`make study DATASET=elpv2`, or `fabguard study --dataset elpv2 --until 01_teacher`).
Results go to reports/elpv2/student_study/results.jsonl, one JSON line per variant, written by the run that measured it.
"""
import os, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from variant_study import append_result, main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "artifacts" / "elpv2-quick"
OUT = ROOT / "reports" / "elpv2" / "student_study"
VARIANTS = {f"{k}, {e} epochs": dict(kd=k == "distilled", epochs=e, seed=0) for e in (60,) for k in ("distilled", "scratch")}
KEEP = ("epoch", "train_acc", "val_acc", "val_macro_f1", "elapsed_s")


def _setup():
    "The elpv2 quick study's data, teacher, its 8 views of 02 and the teacher's logits on them (cached in the run directory)."
    import torch
    from fabguard.data import get_augment, load_scan, load_tensors
    from fabguard.distill import make_views, view_logits
    from fabguard.files import sha256_file
    from fabguard.train import load_checkpoint, make_meta
    if not (RUN / "teacher.pt").is_file(): sys.exit(f"{RUN}: no elpv2 quick study here (no teacher.pt); run `make study DATASET=elpv2` first")
    scan = load_scan(RUN); teacher, tm = load_checkpoint(RUN / "teacher.pt", classes=scan.classes); px = tm["img_size"]
    data = load_tensors(scan, px, RUN / "cache", progress=False)
    meta = make_meta("mobilenet_v3_small", scan.classes, px, scan.hash, good_class=scan.good_class,
                     teacher={"arch": tm["arch"], "epoch": tm["epoch"], "sha256": sha256_file(RUN / "teacher.pt")})
    cache = RUN / "student_study_views.pt"
    if cache.exists(): v = torch.load(cache, weights_only=True)
    else:
        views = make_views(data["train"][0], 8, augment=get_augment("flips"), seed=0)
        v = {"views": views, "logits": view_logits(teacher, views, tm["mean"], tm["std"], 128)}
        tmp = cache.with_suffix(f".{os.getpid()}.tmp"); torch.save(v, tmp); tmp.replace(cache)
    return scan, data, meta, v, teacher, tm


def run_one(name, threads=1):
    "Train one variant as 02 does (without early stopping) and append its result line."
    import torch
    from fabguard.bench import machine_info
    from fabguard.data import get_augment
    from fabguard.distill import train_student
    from fabguard.train import compute_metrics, decision_bias, get_recipe, predict_logits
    cfg = VARIANTS[name]; torch.set_num_threads(threads)
    scan, data, meta, v, teacher, tm = _setup()
    with tempfile.TemporaryDirectory() as t:
        m, h = train_student(data, Path(t) / "s.pt", meta, T=4.0, alpha=0.7, seed=cfg["seed"], recipe=dict(get_recipe("budget"), lr=0.002),
                             views=(v["views"], v["logits"] if cfg["kd"] else None, None), epochs=cfg["epochs"], batch_size=32,
                             patience=10 ** 6, augment=get_augment("flips"), progress=False)
    y, n = data["test"][1].numpy(), len(scan.classes)
    prior = decision_bias(data["train"][1].numpy(), n, "prior")
    lg = predict_logits(m, data["test"][0], batch_size=128).numpy(); tl = predict_logits(teacher, data["test"][0], tm["mean"], tm["std"], 128).numpy()
    score = lambda l: compute_metrics(y, torch.from_numpy(l), scan.classes)
    best = max(h["history"], key=lambda x: x["val_macro_f1"])
    res = dict(variant=name, settings=cfg, best_epoch=best["epoch"], best_val_macro_f1=best["val_macro_f1"], best_val_acc=best["val_acc"],
               test_acc_of_best=score(lg)["accuracy"], test_macro_f1_of_best=score(lg)["macro_f1"], test_acc_prior=score(lg + prior)["accuracy"],
               teacher_test_acc=score(tl)["accuracy"], teacher_test_acc_prior=score(tl + prior)["accuracy"],
               test_pred_prior=(lg + prior).argmax(1).tolist(), train_seconds=h["train_seconds"], threads=threads, cpu=machine_info()["cpu"],
               teacher_sha256=meta["teacher"]["sha256"], torch=torch.__version__, created=time.strftime("%Y-%m-%dT%H:%M:%S"),
               history=[{k: x[k] for k in KEEP} for x in h["history"]])
    append_result(OUT, res)
    print(f"{name}: best val macro-F1 {res['best_val_macro_f1']:.3f} (epoch {res['best_epoch']}), test accuracy {res['test_acc_of_best']:.3f} "
          f"({res['test_acc_prior']:.3f} with the prior), {res['train_seconds']:.0f} s", flush=True)


def table(res:dict) -> str:
    "The markdown table of every variant, and the page (README.md) with the validation curves."
    import matplotlib; matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = ["| student | epochs | best val macro-F1 (epoch) | val accuracy then | test accuracy (as trained) | test accuracy (prior) | test macro-F1 | "
            "teacher's test accuracy (as trained / prior) | training s (1 thread) | teacher.pt | run on |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for r in sorted(res.values(), key=lambda r: (r["settings"]["epochs"], not r["settings"]["kd"])):
        rows.append(f"| {'distilled' if r['settings']['kd'] else 'scratch'} | {r['settings']['epochs']} | {r['best_val_macro_f1']:.3f} ({r['best_epoch']}) | "
                    f"{r['best_val_acc']:.3f} | {r['test_acc_of_best']:.3f} | {r['test_acc_prior']:.3f} | {r['test_macro_f1_of_best']:.3f} | "
                    f"{r['teacher_test_acc']:.3f} / {r['teacher_test_acc_prior']:.3f} | {r['train_seconds']:.0f} | {r['teacher_sha256'][:8]} | {r['cpu']} |")
        ax.plot([x["epoch"] for x in r["history"]], [x["val_macro_f1"] for x in r["history"]], label=r["variant"])
    ax.set_xlabel("epoch"); ax.set_ylabel("val macro-F1"); ax.legend(fontsize=8); ax.grid(alpha=0.3); fig.tight_layout()
    OUT.mkdir(parents=True, exist_ok=True); fig.savefig(OUT / "val_curves.png", dpi=110)
    says = []
    for r in res.values():
        gap = r["teacher_test_acc_prior"] - r["test_acc_prior"]
        says.append(f"{r['variant']}: {r['test_acc_prior']:.1%} test accuracy with the prior, {abs(gap):.1%} {'below' if gap > 0 else 'above'} the teacher's "
                    f"{r['teacher_test_acc_prior']:.1%}; best validation at epoch {r['best_epoch']} of {r['settings']['epochs']}.")
    md = "\n".join(rows)
    page = ["# ELPV: the students of the pretrained teacher", "", f"Written by `python scripts/elpv_students.py --table` from `results.jsonl` "
            f"({len(res)} variants).", "", __doc__.split("\n\n")[0].replace("\n", " "), "", md, "", "![validation macro-F1 per epoch](val_curves.png)", "",
            "## What it says", ""] + [f"- {s}" for s in says] + [""]
    (OUT / "README.md").write_text("\n".join(page))
    return md + "\n\n" + "\n".join(says)


if __name__ == "__main__":
    main(__file__, __doc__, VARIANTS, OUT, run_one, lambda res: print(table(res)))
