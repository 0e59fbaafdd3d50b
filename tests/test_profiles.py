"settings.ini's [smoke] profile equals the parameters cells' defaults of the training notebooks."
from pathlib import Path

import papermill as pm
import pytest

from fabguard.study import RUNNER_KEYS, load_profile

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["01_teacher", "02_distill"])
def test_smoke_equals_notebook_defaults(name):
    declared = pm.inspect_notebook(str(ROOT / "nbs" / f"{name}.ipynb"))
    smoke = load_profile("smoke", ROOT / "settings.ini")
    for k, p in declared.items():
        if k in RUNNER_KEYS: continue
        assert k in smoke, f"{name}: parameter {k} missing from settings.ini"
        assert eval(p["default"]) == smoke[k], f"{name}: {k} = {p['default']} but [smoke] has {smoke[k]!r}"
    for prof in ("quick", "full"):
        assert set(declared) - set(RUNNER_KEYS) <= set(load_profile(prof, ROOT / "settings.ini")), prof
