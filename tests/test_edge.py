"A .pte (ExecuTorch + XNNPACK) through the engine, the HTTP service, the CLI and drift, and refused in one line when unusable; skipped without ExecuTorch."
import json, shutil
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import draw, encode, make_test_model, make_test_pte
from test_torch_free import BLOCK, run_py
from fabguard import edge
from fabguard.cli import main
from fabguard.files import sha256_file
from fabguard.serve import Engine, background_server, build_reference, create_app, read_log

pytestmark = pytest.mark.skipif(not edge.available(), reason=f"ExecuTorch is not installed ({edge.INSTALL})")


@pytest.fixture(scope="module")
def pte_path(tmp_path_factory):
    "The network of the session's .onnx test model (conftest), exported to a .pte instead."
    return make_test_pte(tmp_path_factory.mktemp("pte") / "student_test.pte")


@pytest.fixture(scope="module")
def pte_engine(pte_path): return Engine(pte_path, threads=1)


@pytest.fixture
def image(tmp_path):
    p = tmp_path / "a.png"; Image.fromarray(draw(3, 1)[0]).save(p); return p


def test_engine_pte_matches_onnx(pte_engine, engine):
    "One network as .onnx and as .pte: the same metadata and the same answers, batch after batch."
    assert (pte_engine.runtime, engine.runtime) == ("executorch", "onnxruntime")
    for k in ("classes", "img_size", "good_class", "variant", "mean", "std"): assert getattr(pte_engine, k) == getattr(engine, k), k
    ims = draw(500, 40, size=80)
    a, b = list(engine.predict_many(ims, batch_size=20)), list(pte_engine.predict_many(ims, batch_size=20))
    assert [p["class"] for p in b] == [p["class"] for p in a]
    assert np.allclose([p["confidence"] for p in b], [p["confidence"] for p in a], atol=1e-4)
    assert {p["model_sha256"] for p in b} == {pte_engine.sha256} and pte_engine.sha256 == edge.pte_metadata(pte_engine.path)["pte_sha256"]
    assert "executorch" in repr(pte_engine)


@pytest.mark.slow  # the smoke study's 03c exports and scores an INT8 .pte of its student; the FP32 .pte is served below
def test_int8_pte(pte_engine, engine, tmp_path):
    "The INT8 program (PT2E, XNNPACK's quantizer) serves like the FP32 one, and keeps its labels as well as ONNX Runtime's INT8 of the same net."
    q = Engine(make_test_pte(tmp_path / "student_int8_test.pte", variant="student_int8_test", int8=True), threads=1)
    assert edge.pte_metadata(q.path)["precision"] == "int8" and q.variant == "student_int8_test" and q.classes == pte_engine.classes
    ort_q = Engine(make_test_model(tmp_path / "student_int8_test.onnx", int8=True), threads=1)
    ims = draw(700, 48)
    labels = {k: [p["class"] for p in e.predict_many(ims)] for k, e in (("pte", pte_engine), ("pte8", q), ("ort", engine), ("ort8", ort_q))}
    same = lambda a, b: np.mean([x == y for x, y in zip(labels[a], labels[b])])
    assert same("pte", "ort") == 1  # FP32: the two runtimes agree
    assert same("pte8", "pte") >= same("ort8", "ort") - 0.1, (same("pte8", "pte"), same("ort8", "ort"))  # an untrained net's classes are near ties: relative
    assert all(abs(sum(p["probabilities"].values()) - 1) < 1e-6 for p in q.predict_many(ims[:4]))


def test_pte_over_http(pte_engine, tmp_path):
    "The service on a .pte: model_info names the runtime, concurrent requests are all answered and logged, bad input is refused."
    db = tmp_path / "p.sqlite"; ims = [encode(a) for a in draw(300, 8)]
    with background_server(create_app(pte_engine, db=db)) as url:
        info = httpx.get(f"{url}/model_info").json()
        assert (info["runtime"], info["file"], info["sha256"], info["img_size"]) == ("executorch", "student_test.pte", pte_engine.sha256, 64)
        def client(k):
            with httpx.Client(base_url=url, timeout=60) as c:
                return [c.post("/predict", files=[("files", (f"{k}-{j}-{i}.png", ims[(k + j + i) % 8], "image/png")) for i in range(2)]).status_code
                        for j in range(3)]
        with ThreadPoolExecutor(6) as ex: codes = sum(ex.map(client, range(6)), [])
        assert codes == [200] * 18
        r = httpx.post(f"{url}/predict", files={"files": ("notes.txt", b"hello, I am text" * 10, "text/plain")})
        assert r.status_code == 415 and "notes.txt: not an image" in r.json()["detail"]
        one = httpx.post(f"{url}/predict", files={"file": ("a.png", ims[0], "image/png")}).json()["predictions"][0]
        assert one["class"] == pte_engine.predict(ims[0])["class"] and httpx.get(f"{url}/health").json()["model_sha256"] == pte_engine.sha256
    log = read_log(db)
    assert len(log["class"]) == 18 * 2 + 1 and set(log["model_sha256"]) == {pte_engine.sha256}


def test_drift_with_pte(pte_engine, tmp_path, capsys):
    ref = tmp_path / "reference.json"; ref.write_text(json.dumps(build_reference(pte_engine, draw(0, 60))))
    db = tmp_path / "p.sqlite"
    with background_server(create_app(pte_engine, db=db)) as url, httpx.Client(base_url=url, timeout=60) as c:
        dark = draw(5000, 60, size=80, dark=0.5)
        for i in range(0, 60, 10):
            assert c.post("/predict", files=[("files", (f"{i + j}.png", encode(a), "image/png")) for j, a in enumerate(dark[i:i + 10])]).status_code == 200
    assert main(["drift", "--db", str(db), "--reference", str(ref)]) == 1
    assert "DRIFT  intensity" in capsys.readouterr().out


def test_cli_predict_pte(pte_path, tmp_path, capsys):
    for i, a in enumerate(draw(900, 3)): Image.fromarray(a).save(tmp_path / f"{i}.png")
    assert main(["predict", str(tmp_path), "--model", str(pte_path), "--json"]) == 0
    lines = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    assert len(lines) == 3 and {l["model_sha256"] for l in lines} == {sha256_file(pte_path)} and all(l["class"] in l["probabilities"] for l in lines)


def _sidecar(src, dst, **changes):
    "A copy of `src`'s sidecar beside `dst`, with changes (None: the key removed)."
    d = json.loads(edge.sidecar_path(src).read_text())
    for k, v in changes.items():
        if v is None: d.pop(k)
        else: d[k] = v
    edge.sidecar_path(dst).write_text(json.dumps(d))


BAD = {  # kind: (make the bad model at m from the good one at src, text in the error)
    "missing": (lambda src, m: None, "m.pte: no such ExecuTorch (.pte) file"),
    "no sidecar": (lambda src, m: shutil.copy(src, m), "m.pte: its metadata m.pte.json is missing"),
    "truncated": (lambda src, m: (m.write_bytes(src.read_bytes()[:-5000]), _sidecar(src, m)), "m.pte: does not match its sidecar m.pte.json"),
    "another model's sidecar": (lambda src, m: (shutil.copy(src, m), _sidecar(src, m, pte_sha256="ab" * 32)), "m.pte: does not match its sidecar"),
    "sidecar not JSON": (lambda src, m: (shutil.copy(src, m), edge.sidecar_path(m).write_text("{")), "m.pte.json: not JSON"),
    "sidecar incomplete": (lambda src, m: (shutil.copy(src, m), _sidecar(src, m, metadata=None)), "m.pte.json: not a FabGuard .pte sidecar (lacks metadata)"),
    "no class names": (lambda src, m: (shutil.copy(src, m), _sidecar(src, m, metadata={"img_size": "64"})), "m.pte: model metadata lacks classes"),
    "not a program": (lambda src, m: (m.write_bytes(b"\x00garbage" * 500), _sidecar(src, m, pte_sha256=sha256_file(m))), "m.pte: not a valid ExecuTorch program"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_pte_is_one_line(pte_path, tmp_path, image, capsys, kind):
    make, text = BAD[kind]; m = tmp_path / "m.pte"; make(pte_path, m)
    assert main(["predict", str(image), "--model", str(m)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fabguard: error: ") and text in err, err


def test_pte_without_executorch(pte_path, model_path, image):
    "ExecuTorch (or the torch under it) missing: a .pte is refused in one line naming the extra that brings it; an .onnx is served as before."
    msg = "fabguard: error: `fabguard predict` needs executorch, which the edge extra installs: pip install 'fabguard[edge]'\n"
    for blocked in ("executorch", "torch"):
        cli = BLOCK + f"sys.meta_path.insert(0, NotInstalled([{blocked!r}])); from fabguard.cli import main; sys.exit(main(sys.argv[1:]))"
        r = run_py(cli, "predict", str(image), "--model", str(pte_path))
        assert (r.returncode, r.stderr) == (2, msg), (blocked, r.stderr)
        r = run_py(cli, "predict", str(image), "--model", str(model_path), "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["class"], (blocked, r.stderr)
