"""What the variant studies (recipe_study.py, elpv_resolution.py) share: results as JSON lines, one per variant, written by
the run that measured it, and a command line that trains the variants not yet measured, `--jobs` at a time with one
thread each (a process per variant: never more threads than cores, or OpenMP's barriers stall every job)."""
import argparse, json, os, subprocess, sys, time
from pathlib import Path


def load_results(out:Path) -> dict:
    "variant -> result, from out/results.jsonl."
    p = out / "results.jsonl"
    return {r["variant"]: r for r in map(json.loads, p.read_text().splitlines())} if p.exists() else {}


def append_result(out:Path, res:dict):
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.jsonl", "a") as f: f.write(json.dumps(res) + "\n")


def main(script:str, doc:str, variants:dict, out:Path, run_one, show):
    "The command line of a variant study: `--only`, `--jobs`, `--table` (calls `show(results)`)."
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", help="variant names (default: all not yet measured)")
    ap.add_argument("--jobs", type=int, default=2, help="variants trained at once, one thread each")
    ap.add_argument("--table", action="store_true", help="the table (and figure) of the results so far")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child: run_one(a.child); return
    if a.table: show(load_results(out)); return
    todo = [n for n in (a.only or variants) if n not in load_results(out)]
    unknown = [n for n in todo if n not in variants]
    if unknown: sys.exit(f"{Path(script).name}: unknown variant(s) {unknown}; choose from {list(variants)}")
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    running = []
    while todo or running:
        while todo and len(running) < a.jobs:
            n = todo.pop(0); print(f"start: {n}", flush=True)
            running.append(subprocess.Popen([sys.executable, script, "--child", n], env=env))
        time.sleep(5)
        for p in [p for p in running if p.poll() is not None]:
            running.remove(p)
            if p.returncode: print(f"a variant failed with exit {p.returncode}", flush=True)


def one_standard_error(rows:list, n:int, acc:str="best_val_acc", cost:str="train_seconds") -> tuple:
    """The one-standard-error rule: (best row, the binomial standard error of its accuracy over `n` validation images, the rows
    within one standard error of it, cheapest first)."""
    best = max(rows, key=lambda r: r[acc])
    se = (best[acc] * (1 - best[acc]) / n) ** 0.5
    return best, se, sorted((r for r in rows if r[acc] >= best[acc] - se), key=lambda r: r[cost])


def dihedral_logits(model, x, mean=None, std=None):
    "Test-time augmentation: the mean logits (numpy) over the 8 flips and quarter turns of each uint8 image (the ELPV views' symmetry group)."
    import torch
    from fabguard.train import predict_logits
    kw = {} if mean is None else dict(mean=mean, std=std)
    views = [torch.rot90(x, k, dims=(2, 3)) for k in range(4)]; views += [v.flip(3) for v in views]
    return torch.stack([predict_logits(model, v, batch_size=128, **kw) for v in views]).mean(0).numpy()
