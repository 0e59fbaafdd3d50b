"Profiles: every notebook's parameters cell agrees with [smoke], and papermill's injected values reach the notebook."
import json
from pathlib import Path

import nbformat, papermill as pm, pytest
from PIL import Image

from fabguard.study import RUNNER_KEYS, load_profile, run_study, study_notebook, StudyError

ROOT = Path(__file__).resolve().parents[1]
NBS = sorted(p for p in (ROOT / "nbs").glob("[0-9][0-9]*.ipynb"))


def _params(nb):
    return {k: v["default"] for k, v in pm.inspect_notebook(str(nb)).items()}


def test_parameters_cells_match_smoke():
    import ast, configparser
    smoke = load_profile("smoke", ROOT / "settings.ini")
    cp = configparser.ConfigParser(interpolation=None); cp.read(ROOT / "settings.ini")
    known = {k for s in cp.sections() for k in cp[s]} | set(RUNNER_KEYS)
    used = set()
    for nb in NBS:
        for k, v in _params(nb).items():
            assert k in known, f"{nb.name}: parameter {k!r} is not a settings.ini key"
            used.add(k)
            if k in smoke: assert ast.literal_eval(v) == smoke[k], f"{nb.name}: {k}={v} but [smoke] has {smoke[k]!r}"
    assert set(smoke) <= used, f"settings keys no notebook uses: {set(smoke) - used}"
    assert not set(RUNNER_KEYS) & {k for s in cp.sections() for k in cp[s]}, "the runner's keys are set by no profile"
    for prof in ("quick", "full"):  # every profile sets every parameter
        assert used - set(RUNNER_KEYS) <= set(load_profile(prof, ROOT / "settings.ini")), prof


def test_parameters_tag_survives_nbdev_clean():
    for nb in NBS:
        if _params(nb):
            tags = [c.metadata.get("tags", []) for c in nbformat.read(nb, as_version=4).cells]
            assert ["parameters"] in tags, nb.name


def test_injected_value_reaches_notebook(tmp_path):
    "Run 00_data with papermill and a per_class that differs from the default: the data written must follow it."
    run, rep = tmp_path / "run", tmp_path / "rep"
    pm.execute_notebook(study_notebook(ROOT / "nbs" / "00_data.ipynb", lessons=False), str(tmp_path / "out.ipynb"), cwd=str(ROOT / "nbs"),
                        parameters=dict(run_dir=str(run), report_dir=str(rep), per_class=5, img_size=32),
                        progress_bar=False, kernel_name="python3")
    counts = json.loads((run / "data" / "manifest.json").read_text())["counts"]
    assert sum(counts[s]["Void"] for s in counts) == 5 and sum(counts[s]["Good"] for s in counts) == 15
    assert (rep / "figures" / "samples.jpg").exists()


def test_study_runner_skips_and_names_failures(tmp_path):
    rep, art = tmp_path / "reports", tmp_path / "artifacts"
    lines = []
    run_study("smoke", "synthetic", root=ROOT, reports=rep, artifacts=art, notebooks=("00_data",), lessons=False, log=lines.append)
    assert (rep / "synthetic" / "smoke" / "executed" / "00_data.ipynb").exists()
    run_study("smoke", "synthetic", root=ROOT, reports=rep, artifacts=art, notebooks=("00_data",), lessons=False, log=lines.append)
    assert "inputs unchanged, skipped" in lines[-2]
    # a notebook that fails: the error names the notebook and the cell, and the partial output is kept
    fake = tmp_path / "repo"; (fake / "nbs").mkdir(parents=True)
    (fake / "settings.ini").write_text("[smoke]\nseed = 0\n")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("1 / 0")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "python3", "language": "python"}
    nbformat.write(nb, fake / "nbs" / "99_bad.ipynb")
    with pytest.raises(StudyError, match=r"99_bad.ipynb failed in cell 2 \(ZeroDivisionError"):
        run_study("smoke", "synthetic", root=fake, notebooks=("99_bad",), log=lines.append)
    assert (fake / "reports" / "synthetic" / "smoke" / "executed" / "99_bad.ipynb").exists()


def test_runner_passes_good_class(tmp_path):
    "`fabguard study --good-class NAME` reaches 00_data, which records it in the manifest; a name that is no class stops 00."
    lot = tmp_path / "lot"
    for c in ("a", "b"):
        (lot / c).mkdir(parents=True)
        for i in range(12): Image.new("RGB", (16, 16), (i * 20, 0, 0)).save(lot / c / f"{i}.png")
    kw = dict(root=ROOT, reports=tmp_path / "rep", artifacts=tmp_path / "art", notebooks=("00_data",), lessons=False, log=lambda s: None)
    run_study("smoke", str(lot), good_class="b", **kw)
    assert json.loads((tmp_path / "art" / "lot-smoke" / "manifest.json").read_text())["good_class"] == "b"
    with pytest.raises(StudyError, match=r"00_data.ipynb failed in cell \d+ \(ValueError: good_class='nope': not one of the classes"):
        run_study("smoke", str(lot), good_class="nope", **kw)
