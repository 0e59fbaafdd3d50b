"The serving stack over real HTTP: a uvicorn server on a free loopback port, good and bad uploads, concurrency, drift."
import contextlib, io, json, os, shutil, socket, sqlite3, subprocess, sys, time, zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import VARIANT, draw, encode
from fabguard.cli import main
from fabguard.files import model_card_paths
from fabguard.serve import PredictionLog, background_server, create_app

MAX_MB = 0.25


@pytest.fixture(scope="module")
def server(engine, metrics_json, tmp_path_factory):
    db = tmp_path_factory.mktemp("db") / "predictions.sqlite"
    with background_server(create_app(engine, db=db, metrics=metrics_json, max_upload_mb=MAX_MB)) as url:
        yield url, db


def rows(db): return sqlite3.connect(db).execute("SELECT COUNT(*) FROM predictions").fetchone()[0]


def with_png_size(data:bytes, w:int, h:int) -> bytes:
    "A PNG whose header claims w x h pixels (the CRC fixed), over a tiny body: a decompression bomb's calling card."
    b = bytearray(data); b[16:20], b[20:24] = w.to_bytes(4, "big"), h.to_bytes(4, "big")
    b[29:33] = zlib.crc32(bytes(b[12:29])).to_bytes(4, "big"); return bytes(b)


def test_health_docs_model_info(server, engine):
    url, _ = server
    test = httpx.get(f"{url}/health").json()
    assert test == {"status": "ok", "model_sha256": engine.sha256, "variant": VARIANT}
    info = httpx.get(f"{url}/model_info").json()
    assert info["classes"] == engine.classes and info["sha256"] == engine.sha256 and info["img_size"] == 64
    assert info["study"]["accuracy"] == 0.91 and info["study"]["latency_ms"]["b1_t1"]["p50"] == 1.5 and info["study"]["dataset"] == "synthetic"
    assert httpx.get(f"{url}/docs").status_code == 200
    assert "/predict" in httpx.get(f"{url}/openapi.json").json()["paths"]


def test_model_card(server, engine, model_path, tmp_path):
    "GET /model_card: the card beside the served .onnx as JSON, or as Markdown when asked; a clear 404 without one or for another file's card."
    url, _ = server  # its model has no card beside it
    r = httpx.get(f"{url}/model_card")
    assert r.status_code == 404 and r.json()["detail"].startswith(f"no model card beside {model_path.name} (expected {model_path.stem}.model_card.json")
    assert httpx.get(f"{url}/model_info").json()["model_card"] is None
    served = tmp_path / "student_int8.onnx"; shutil.copyfile(model_path, served)
    js, md = model_card_paths(served)
    card = {"format": "fabguard-model-card/1", "model": {"file": served.name, "sha256": engine.sha256}, "performance": {"accuracy": 0.91}}
    js.write_text(json.dumps(card)); md.write_text("# Model card: `student_int8.onnx`\n")
    with background_server(create_app(served)) as u:
        assert httpx.get(f"{u}/model_card").json() == card and httpx.get(f"{u}/model_info").json()["model_card"] == "/model_card"
        r = httpx.get(f"{u}/model_card", headers={"Accept": "text/markdown"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/markdown") and r.text == md.read_text()
    js.write_text(json.dumps({**card, "model": {"sha256": "f" * 64}}))  # a card left over from another export
    with background_server(create_app(served)) as u:
        r = httpx.get(f"{u}/model_card")
    assert r.status_code == 404 and "student_int8.model_card.json describes another file (sha256 ffffffffffff" in r.json()["detail"]


def test_predict_formats(server, engine):
    url, db = server
    ims = draw(100, 3, size=96); n0 = rows(db)
    files = [("files", ("a.png", encode(ims[0]), "image/png")), ("files", ("b.jpg", encode(ims[1], "JPEG", quality=95), "image/jpeg")),
             ("files", ("c.bmp", encode(ims[2], "BMP"), "image/bmp"))]
    r = httpx.post(f"{url}/predict", files=files)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["file"] for p in preds] == ["a.png", "b.jpg", "c.bmp"]
    for p, (_, (name, data, _)) in zip(preds, files):
        local = engine.predict(data, name=name)
        assert p["class"] == local["class"] and abs(p["confidence"] - local["confidence"]) < 1e-5
        assert p["defect_detected"] == (p["class"] != "Good") and abs(sum(p["probabilities"].values()) - 1) < 1e-6
        assert p["model_sha256"] == engine.sha256 and p["latency_ms"] > 0
    one = httpx.post(f"{url}/predict", files={"file": ("one.png", encode(ims[0]), "image/png")})
    assert one.status_code == 200 and one.json()["predictions"][0]["class"] == preds[0]["class"]
    assert rows(db) == n0 + 4


PNG = encode(draw(7, 1)[0])
TINY = encode(np.zeros((8, 8, 3), np.uint8))
def _gif(): b = io.BytesIO(); Image.fromarray(draw(7, 1)[0]).save(b, "GIF"); return b.getvalue()
BAD = {  # kind: (request kwargs, status, text in the error)
    "not an image": (dict(files={"files": ("notes.txt", b"hello, I am text" * 10, "text/plain")}), 415, "notes.txt: not an image"),
    "truncated": (dict(files={"files": ("half.png", PNG[: len(PNG) // 2], "image/png")}), 400, "half.png: corrupt or truncated"),
    "gif": (dict(files={"files": ("x.gif", _gif(), "image/gif")}), 415, "x.gif: unsupported format GIF"),
    "too large upload": (dict(files={"files": ("big.png", os.urandom(int(MAX_MB * 1e6) + 10_000), "image/png")}), 413, "upload limit of 0.25 MB"),
    "too large chunked upload": (dict(content=iter([b'--xyz\r\nContent-Disposition: form-data; name="files"; filename="big.png"\r\n'
                                                    b'Content-Type: image/png\r\n\r\n'] + [os.urandom(2**16)] * 8 + [b"\r\n--xyz--\r\n"]),
                                      headers={"content-type": "multipart/form-data; boundary=xyz"}), 413, "upload limit of 0.25 MB"),
    "over 4096 px": (dict(files={"files": ("wide.png", encode(np.zeros((10, 5000, 3), np.uint8)), "image/png")}), 400, "5000x10 px exceeds the limit of 4096"),
    "decompression bomb": (dict(files={"files": ("bomb.png", with_png_size(PNG, 60000, 60000), "image/png")}), 400, "decompression bomb"),
    "empty multipart": (dict(content=b"--xyz--\r\n", headers={"content-type": "multipart/form-data; boundary=xyz"}), 422, "no image"),
    "missing field": (dict(files={"image": ("a.png", PNG, "image/png")}), 422, "no image"),
    "not multipart": (dict(json={"image": "a.png"}), 422, "no image"),
    "too many files": (dict(files=[("files", (f"{i}.png", TINY, "image/png")) for i in range(65)]), 400, "65 files in one request; at most 64"),
    "one bad among good": (dict(files=[("files", ("ok.png", PNG, "image/png")), ("files", ("bad.png", b"\x89PNG\r\n\x1a\n" + b"0" * 100, "image/png"))]), 400, "bad.png"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_input(server, kind):
    url, db = server
    kw, status, text = BAD[kind]; n0 = rows(db)
    before = httpx.get(f"{url}/metrics").json()["responses"].get(str(status), 0)
    r = httpx.post(f"{url}/predict", **kw)
    assert r.status_code == status, (kind, r.status_code, r.text)
    assert text in r.json()["detail"], r.json()
    assert rows(db) == n0  # nothing logged for a refused request
    assert httpx.get(f"{url}/metrics").json()["responses"][str(status)] == before + 1
    assert httpx.get(f"{url}/health").status_code == 200  # and the server keeps serving
    assert httpx.post(f"{url}/predict", files={"files": ("ok.png", PNG, "image/png")}).status_code == 200


def test_concurrent_requests_all_logged(server):
    url, db = server
    ims = [encode(a) for a in draw(300, 8)]
    n0, m0 = rows(db), httpx.get(f"{url}/metrics").json()
    def client(k):
        codes = []
        with httpx.Client(base_url=url, timeout=30) as c:
            for j in range(8):
                files = [("files", (f"{k}-{j}-{i}.png", ims[(k + j + i) % 8], "image/png")) for i in range(1 + j % 2)]
                codes.append(c.post("/predict", files=files).status_code)
        return codes
    with ThreadPoolExecutor(12) as ex: codes = sum(ex.map(client, range(12)), [])
    assert codes == [200] * 96
    assert rows(db) == n0 + 12 * (4 * 1 + 4 * 2)  # every image of every request, no row lost
    m = httpx.get(f"{url}/metrics").json()
    assert m["requests"] - m0["requests"] == 96 and m["predictions"] - m0["predictions"] == 144
    assert m["latency_ms"]["p50"] > 0 and m["latency_ms"]["p95"] >= m["latency_ms"]["p50"] and sum(m["class_histogram"].values()) == m["predictions"]
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _post_all(url, images, per_request=10):
    with httpx.Client(base_url=url, timeout=60) as c:
        for i in range(0, len(images), per_request):
            r = c.post("/predict", files=[("files", (f"{i + j}.png", encode(a), "image/png")) for j, a in enumerate(images[i:i + per_request])])
            assert r.status_code == 200, r.text


@pytest.mark.parametrize("dark, drift", [(1.0, False), (0.5, True)])
def test_drift_over_http(engine, metrics_json, tmp_path, capsys, dark, drift):
    db = tmp_path / "p.sqlite"
    with background_server(create_app(engine, db=db)) as url: _post_all(url, draw(5000, 60, size=80, dark=dark))
    rc = main(["drift", "--db", str(db), "--reference", str(metrics_json)])
    out = capsys.readouterr().out
    assert rc == (1 if drift else 0), out
    assert ("DRIFT  intensity" in out) == drift and "p=" in out
    standalone = tmp_path / "reference.json"; standalone.write_text(json.dumps(json.loads(metrics_json.read_text())["reference"]))
    assert main(["drift", "--db", str(db), "--reference", str(standalone), "--json"]) == rc
    assert json.loads(capsys.readouterr().out)["drift"] == drift


def test_drift_needs_samples(engine, metrics_json, tmp_path, capsys):
    db = tmp_path / "p.sqlite"; PredictionLog(db).add(list(engine.predict_many(draw(0, 5))))
    assert main(["drift", "--db", str(db), "--reference", str(metrics_json)]) == 2
    assert "only 5 recent predictions" in capsys.readouterr().err


def test_cli_predict(model_path, tmp_path, capsys):
    d = tmp_path / "imgs"; (d / "sub").mkdir(parents=True)
    for i, a in enumerate(draw(900, 3)): Image.fromarray(a).save(d / "sub" / f"{i}.png")
    (d / "broken.png").write_bytes(b"nope")
    one = tmp_path / "one.jpg"; Image.fromarray(draw(950, 1)[0]).save(one)
    assert main(["predict", str(one), "--model", str(model_path), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["file"] == str(one) and r["class"] in r["probabilities"] and len(r["model_sha256"]) == 64
    assert main(["predict", str(d), str(one), "--model", str(model_path), "--json"]) == 1  # one unreadable image
    lines = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    assert len(lines) == 5 and sum("error" in l for l in lines) == 1
    assert main(["predict", str(d / "sub"), "--model", str(model_path)]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 3 and out.splitlines()[0].startswith(str(d / "sub" / "0.png")) and "predict" in err  # tqdm bar
    assert main(["predict", str(d / "none"), "--model", str(model_path)]) == 2


def test_cli_serve_subprocess(model_path, metrics_json, tmp_path):
    with socket.socket() as s: s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    db = tmp_path / "served.sqlite"
    cmd = [sys.executable, "-c", "import sys; from fabguard.cli import main; sys.exit(main())", "serve", "--model", str(model_path),
           "--port", str(port), "--db", str(db), "--metrics", str(metrics_json), "--max-upload-mb", "1"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        url, t0 = f"http://127.0.0.1:{port}", time.time()
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health").status_code == 200: break
            assert p.poll() is None and time.time() - t0 < 60, p.stdout.read().decode() if p.poll() is not None else "server did not start"
            time.sleep(0.2)
        assert httpx.post(f"{url}/predict", files={"files": ("a.png", PNG, "image/png")}).status_code == 200
        assert httpx.post(f"{url}/predict", files={"files": ("a.txt", b"x" * 50, "text/plain")}).status_code == 415
        assert httpx.get(f"{url}/model_info").json()["study"]["accuracy"] == 0.91
    finally:
        p.terminate(); p.wait(20)
    assert rows(db) == 1


def test_int8_model(tmp_path):
    from conftest import make_test_model
    from fabguard.serve import Engine
    e = Engine(make_test_model(tmp_path / "student_int8.onnx", int8=True, variant="student_int8"))
    r = e.predict(PNG)
    assert e.variant == "student_int8" and r["class"] in e.classes and abs(sum(r["probabilities"].values()) - 1) < 1e-6


def test_model_without_a_no_defect_class(tmp_path, capsys):
    "A model whose classes include none meaning 'no defect': defect_detected is null over HTTP, NULL in the log, '-' in predict."
    from conftest import make_test_model
    from fabguard.serve import Engine, read_log
    path = make_test_model(tmp_path / "own.onnx", props={"classes": json.dumps([f"kind_{i}" for i in range(12)]), "good_class": ""})
    e = Engine(path); db = tmp_path / "p.sqlite"
    assert e.good_class is None
    with background_server(create_app(e, db=db)) as url:
        r = httpx.post(f"{url}/predict", files=[("files", (f"{i}.png", encode(a), "image/png")) for i, a in enumerate(draw(40, 3))])
        info = httpx.get(f"{url}/model_info").json()
    assert r.status_code == 200 and '"defect_detected":null' in r.text.replace(" ", "") and info["good_class"] is None
    assert read_log(db)["defect"] == [None] * 3
    (tmp_path / "one.png").write_bytes(PNG)
    assert main(["predict", str(tmp_path / "one.png"), "--model", str(path)]) == 0
    assert capsys.readouterr().out.rstrip("\n").split("\t")[-1] == "-"
    assert main(["predict", str(tmp_path / "one.png"), "--model", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["defect_detected"] is None


def test_float_input_model_refused(tmp_path, capsys):
    "An .onnx exported before the normalization moved into the graph (float input): refused in one line that says to re-export."
    import warnings, onnx, torch, torchvision
    from fabguard.serve import Engine
    old = tmp_path / "old.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(torchvision.models.mobilenet_v3_small(num_classes=12).eval(), (torch.zeros(1, 3, 64, 64),), str(old),
                          input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "N"}}, opset_version=17, dynamo=False)
    mp = onnx.load(old); onnx.helper.set_model_props(mp, {"classes": json.dumps([f"c{i}" for i in range(12)]), "img_size": "64"}); onnx.save(mp, old)
    with pytest.raises(ValueError, match="takes tensor\\(float\\) input normalized outside the model.*re-export it with this version"): Engine(old)
    (tmp_path / "one.png").write_bytes(PNG)
    assert main(["predict", str(tmp_path / "one.png"), "--model", str(old)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "old.onnx: takes tensor(float) input" in err and "re-export it with this version of fabguard" in err
