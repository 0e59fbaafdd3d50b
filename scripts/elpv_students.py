"""The ELPV student study (issue "A pretrained teacher ... and ELPV above the paper"): what stands between the pretrained
teacher and the students on elpv2? The elpv2 quick report's students stop early (patience 10 on a noisy validation
macro-F1) short of the teacher (its report's accuracy table). Each variant trains the seed student (MobileNetV3-Small) from scratch,
distilled from the elpv2 quick study's EfficientNet-Lite0 teacher or without it, on the same 8 cached views (flips and quarter
turns, drawn from seed 0, as 02 draws them), with everything else as 02's `[quick.elpv]` (budget recipe, batch 32, peak lr
2e-3, T = 4, alpha = 0.7) but a patient schedule and no early stopping; the weights of the best validation macro-F1 are
scored on test with both decision rules (01: as trained, and with the training prior added, the study's rule on ELPV) and with
8-view test-time augmentation. Seeds 0-4 of the pair give 02's run-level interval of distilled minus scratch (paired by seed); one
variant distils on the views mixed pairwise (function matching, Beyer et al. 2022), the teacher scoring the mixed views.

    python scripts/elpv_students.py --jobs 2     # every variant not yet in the results, two at a time (one thread each)
    python scripts/elpv_students.py --table      # the markdown table (and the page) from the results

Needs the elpv2 quick study's run directory (`make study DATASET=elpv2`, or `fabguard study --dataset elpv2 --until 01_teacher`).
Results go to reports/elpv2/student_study/results.jsonl, one JSON line per variant, written by the run that measured it.
"""
import os, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from variant_study import append_result, dihedral_logits, main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "artifacts" / "elpv2-quick"
OUT = ROOT / "reports" / "elpv2" / "student_study"
VARIANTS = {f"{k}, {e} epochs": dict(kd=k == "distilled", epochs=e, seed=0) for e in (60,) for k in ("distilled", "scratch")}
# the run-level comparison: seeds 1-4 of the same pair (the student's initialization and batch order; the teacher and its views fixed)
VARIANTS |= {f"{k}, 60 epochs, seed {s}": dict(kd=k == "distilled", epochs=60, seed=s) for s in (1, 2, 3, 4) for k in ("distilled", "scratch")}
# function matching (Beyer et al. 2022): the 8 views mixed pairwise (mixup, Beta(1, 1)), the teacher scoring the mixed views themselves
VARIANTS |= {"distilled, 60 epochs, function matching": dict(kd=True, epochs=60, seed=0, mixup=1.0)}
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


def _mixed(v:dict, data:dict, n_classes:int, alpha:float, teacher, tm) -> dict:
    "The views mixed by `mixup_views` (seed 0), their hard-term targets and the teacher's logits on them (cached beside the plain views)."
    import torch
    from fabguard.distill import mixup_views, view_logits
    cache = RUN / f"student_study_views_mixup{alpha:g}.pt"
    if cache.exists(): return torch.load(cache, weights_only=True)
    views, targets = mixup_views(v["views"], data["train"][1], n_classes, alpha, seed=0)
    m = {"views": views, "logits": view_logits(teacher, views, tm["mean"], tm["std"], 128), "targets": targets}
    tmp = cache.with_suffix(f".{os.getpid()}.tmp"); torch.save(m, tmp); tmp.replace(cache)
    return m


def run_one(name, threads=1):
    "Train one variant as 02 does (without early stopping) and append its result line."
    import torch
    from fabguard.bench import machine_info
    from fabguard.data import get_augment
    from fabguard.distill import train_student
    from fabguard.train import compute_metrics, decision_bias, get_recipe, predict_logits
    cfg = VARIANTS[name]; torch.set_num_threads(threads)
    scan, data, meta, v, teacher, tm = _setup()
    if cfg.get("mixup"): v = _mixed(v, data, len(scan.classes), cfg["mixup"], teacher, tm)
    with tempfile.TemporaryDirectory() as t:
        m, h = train_student(data, Path(t) / "s.pt", meta, T=4.0, alpha=0.7, seed=cfg["seed"], recipe=dict(get_recipe("budget"), lr=0.002),
                             views=(v["views"], v["logits"] if cfg["kd"] else None, v.get("targets")), epochs=cfg["epochs"], batch_size=32,
                             patience=10 ** 6, augment=get_augment("flips"), progress=False)
    y, n = data["test"][1].numpy(), len(scan.classes)
    prior = decision_bias(data["train"][1].numpy(), n, "prior")
    lg = predict_logits(m, data["test"][0], batch_size=128).numpy(); tl = predict_logits(teacher, data["test"][0], tm["mean"], tm["std"], 128).numpy()
    lg8, tl8 = dihedral_logits(m, data["test"][0]), dihedral_logits(teacher, data["test"][0], tm["mean"], tm["std"])
    score = lambda l: compute_metrics(y, torch.from_numpy(l), scan.classes)
    best = max(h["history"], key=lambda x: x["val_macro_f1"])
    res = dict(variant=name, settings=cfg, best_epoch=best["epoch"], best_val_macro_f1=best["val_macro_f1"], best_val_acc=best["val_acc"],
               test_acc_of_best=score(lg)["accuracy"], test_macro_f1_of_best=score(lg)["macro_f1"], test_acc_prior=score(lg + prior)["accuracy"],
               teacher_test_acc=score(tl)["accuracy"], teacher_test_acc_prior=score(tl + prior)["accuracy"],
               test_acc_prior_tta=score(lg8 + prior)["accuracy"], teacher_test_acc_prior_tta=score(tl8 + prior)["accuracy"],
               test_pred_prior=(lg + prior).argmax(1).tolist(), train_seconds=h["train_seconds"], threads=threads, cpu=machine_info()["cpu"],
               teacher_sha256=meta["teacher"]["sha256"], torch=torch.__version__, created=time.strftime("%Y-%m-%dT%H:%M:%S"),
               history=[{k: x[k] for k in KEEP} for x in h["history"]])
    append_result(OUT, res)
    print(f"{name}: best val macro-F1 {res['best_val_macro_f1']:.3f} (epoch {res['best_epoch']}), test accuracy {res['test_acc_of_best']:.3f} "
          f"({res['test_acc_prior']:.3f} with the prior), {res['train_seconds']:.0f} s", flush=True)


def _pair_interval(res:dict, kd:str="distilled, 60 epochs", sc:str="scratch, 60 epochs") -> tuple:
    "Distilled minus scratch over the paired seeds measured (seed 0 and those named `, seed s`): 02's run-level intervals of test accuracy and macro-F1 (the prior rule)."
    import numpy as np
    from fabguard.distill import run_interval
    seeds = sorted({r["settings"]["seed"] for r in res.values()})
    pairs = [(res.get(kd if s == 0 else f"{kd}, seed {s}"), res.get(sc if s == 0 else f"{sc}, seed {s}")) for s in seeds]
    pairs = [(a, b) for a, b in pairs if a and b]
    if len(pairs) < 2: return None, None
    y = np.asarray(_test_labels()); A, B = [a["test_pred_prior"] for a, b in pairs], [b["test_pred_prior"] for a, b in pairs]
    acc = run_interval(y, A, B, metric=lambda yy, pp: float(np.mean(yy == pp)))
    f1 = run_interval(y, A, B, n_classes=int(y.max()) + 1)
    return acc, f1


def _test_labels() -> list:
    "The elpv2 quick study's test labels, in the order of its tensors (the scan's items of the test split)."
    from fabguard.data import load_scan
    return [i["label"] for i in load_scan(RUN).items if i["split"] == "test"]


def table(res:dict) -> str:
    "The markdown table of every variant, the run-level comparison of distilled and scratch, and the page (README.md) with the validation curves."
    import matplotlib; matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from fabguard.distill import interval_sentence
    tta = lambda r, k: f"{r[k]:.3f}" if k in r else "-"
    rows = ["| student | seed | epochs | best val macro-F1 (epoch) | val accuracy then | test accuracy (as trained) | test accuracy (prior) | "
            "with 8-view test-time augmentation | test macro-F1 | teacher's test accuracy (as trained / prior / prior, 8 views) | training s (1 thread) | teacher.pt | run on |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for r in sorted(res.values(), key=lambda r: (r["settings"].get("mixup", 0), not r["settings"]["kd"], r["settings"]["seed"])):
        st = r["settings"]; who = ("distilled" if st["kd"] else "scratch") + (", function matching (mixup)" if st.get("mixup") else "")
        rows.append(f"| {who} | {st['seed']} | {st['epochs']} | {r['best_val_macro_f1']:.3f} ({r['best_epoch']}) | "
                    f"{r['best_val_acc']:.3f} | {r['test_acc_of_best']:.3f} | {r['test_acc_prior']:.3f} | {tta(r, 'test_acc_prior_tta')} | {r['test_macro_f1_of_best']:.3f} | "
                    f"{r['teacher_test_acc']:.3f} / {r['teacher_test_acc_prior']:.3f} / {tta(r, 'teacher_test_acc_prior_tta')} | {r['train_seconds']:.0f} | {r['teacher_sha256'][:8]} | {r['cpu']} |")
        ax.plot([x["epoch"] for x in r["history"]], [x["val_macro_f1"] for x in r["history"]], label=r["variant"],
                color="C0" if st["kd"] and not st.get("mixup") else "C1" if not st["kd"] else "C2", lw=1.2 if st["seed"] == 0 else 0.6)
    ax.set_xlabel("epoch"); ax.set_ylabel("val macro-F1"); ax.legend(fontsize=6); ax.grid(alpha=0.3); fig.tight_layout()
    OUT.mkdir(parents=True, exist_ok=True); fig.savefig(OUT / "val_curves.png", dpi=110)
    says = []
    for r in res.values():
        gap = r["teacher_test_acc_prior"] - r["test_acc_prior"]
        says.append(f"{r['variant']}: {r['test_acc_prior']:.1%} test accuracy with the prior, {abs(gap):.1%} {'below' if gap > 0 else 'above'} the teacher's "
                    f"{r['teacher_test_acc_prior']:.1%}; best validation at epoch {r['best_epoch']} of {r['settings']['epochs']}.")
    acc, f1 = _pair_interval(res)
    if acc:
        says.insert(0, interval_sentence(acc, "distilled minus scratch (test accuracy, the prior rule)", metric="accuracy", unit="student seeds") + " "
                    + interval_sentence(f1, "distilled minus scratch (test macro-F1, the prior rule)", unit="student seeds"))
    shas = sorted({r["teacher_sha256"][:8] for r in res.values()}); accs = {(r["teacher_test_acc"], r["teacher_test_acc_prior"]) for r in res.values()}
    if len(shas) > 1 and len(accs) == 1:
        says.append(f"The teacher.pt files ({', '.join(shas)}) come from two trainings of the same study step (`fabguard study --dataset elpv2 --until 01_teacher`) in "
                    "two sessions: the same test accuracy, as trained and with the prior, in every row (the files also record their own run's metadata).")
    t8 = [r["teacher_test_acc_prior_tta"] for r in res.values() if "teacher_test_acc_prior_tta" in r]
    if t8: says.append(f"The teacher itself, averaged over the 8 flips and quarter turns of each test image: {t8[0]:.1%} test accuracy with the prior "
                       f"(one view: {next(iter(res.values()))['teacher_test_acc_prior']:.1%}).")
    md = "\n".join(rows)
    page = ["# ELPV: the students of the pretrained teacher", "", f"Written by `python scripts/elpv_students.py --table` from `results.jsonl` "
            f"({len(res)} variants).", "", __doc__.split("\n\n")[0].replace("\n", " "), "", md, "", "![validation macro-F1 per epoch](val_curves.png)", "",
            "## What it says", ""] + [f"- {s}" for s in says] + [""]
    (OUT / "README.md").write_text("\n".join(page))
    return md + "\n\n" + "\n".join(says)


if __name__ == "__main__":
    main(__file__, __doc__, VARIANTS, OUT, run_one, lambda res: print(table(res)))
