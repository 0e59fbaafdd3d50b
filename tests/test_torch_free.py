"The deployment path needs no torch: `fabguard predict`, the FastAPI service over HTTP and `fabguard drift`, in a fresh interpreter."
import json, os, subprocess, sys

import pytest
from PIL import Image

from conftest import draw

STUDY_ONLY = ("torch", "torchvision", "matplotlib", "pandas", "sklearn", "seaborn", "onnx", "onnxscript", "papermill", "nbdev",
              "executorch")  # ExecuTorch (the edge extra) too: an .onnx is served without it

BLOCK = """
import sys
class NotInstalled:  # `import m` of a blocked package fails as if it were not installed
    def __init__(self, names): self.names = set(names)
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names: raise ModuleNotFoundError(f"No module named {name!r}", name=name)
"""

SCRIPT = BLOCK + """
import json
study_only, block, image, model, db, reference = json.loads(sys.argv[1])
if block: sys.meta_path.insert(0, NotInstalled(study_only))
import httpx
from fabguard.cli import main
from fabguard.serve import background_server, create_app
out = {"predict": main(["predict", image, "--model", model, "--json"])}
with background_server(create_app(model, db=db)) as url:
    out["http"] = sorted({httpx.post(url + "/predict", files={"files": ("a.png", open(image, "rb").read(), "image/png")}).status_code
                          for _ in range(35)})
out["drift"] = main(["drift", "--db", db, "--reference", reference])
out["loaded"] = sorted(m for m in study_only if sys.modules.get(m) is not None)
print(json.dumps(out))
"""


def run_py(script, *args):
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH")) if p)})


@pytest.mark.parametrize("block", [False, True], ids=["imports-nothing-of-the-study", "works-without-the-study"])
def test_serving_and_predicting_never_import_torch(model_path, metrics_json, tmp_path, block):
    image = tmp_path / "a.png"; Image.fromarray(draw(3, 1)[0]).save(image)
    r = run_py(SCRIPT, json.dumps([STUDY_ONLY, block, str(image), str(model_path), str(tmp_path / "p.sqlite"), str(metrics_json)]))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    out, pred = json.loads(lines[-1]), json.loads(lines[0])
    assert pred["class"] in pred["probabilities"] and len(pred["model_sha256"]) == 64
    assert out["predict"] == 0 and out["http"] == [200] and out["drift"] in (0, 1)  # 1: drift found, 2 would be an error
    assert out["loaded"] == [], f"the deployment path imported {out['loaded']}"


def test_study_commands_name_the_missing_extra(tmp_path):
    "Without torch, `fabguard data synth` still works (the generator is torch-free) and `data check` says which extra to install."
    cli = BLOCK + "sys.meta_path.insert(0, NotInstalled(['torch'])); from fabguard.cli import main; sys.exit(main(sys.argv[1:]))"
    r = run_py(cli, "data", "synth", "--out", str(tmp_path / "s"), "--per-class", "3", "--size", "40")
    assert r.returncode == 0 and (tmp_path / "s" / "manifest.json").exists(), r.stderr
    r = run_py(cli, "data", "check", str(tmp_path / "s"))
    assert r.returncode == 2 and r.stderr == "fabguard: error: `fabguard data` needs torch, which the study extra installs: pip install 'fabguard[study]'\n"
