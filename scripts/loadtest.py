"""Load test of `fabguard serve` on loopback: concurrent keep-alive clients POST one image per request for a fixed time.

Reports requests/s, errors and latency percentiles (client side, the whole HTTP round trip) as JSON.

    python scripts/loadtest.py --model artifacts/synthetic-quick/student_int8.onnx        # starts `fabguard serve` itself
    python scripts/loadtest.py --url http://127.0.0.1:8000                                # a server already running

Without a study run, a small test model will do: `python tests/conftest.py /tmp/test_int8.onnx --int8`.
Loopback only; the run is bounded by --duration and --max-requests.
"""
import argparse, http.client, io, json, os, platform, socket, sqlite3, subprocess, sys, tempfile, threading, time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np


def multipart(data:bytes, name:str="image.png", boundary:str="fabguardloadtest") -> tuple[bytes, str]:
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            f'Content-Type: application/octet-stream\r\n\r\n').encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def worker(host, port, body, ctype, deadline, budget, out):
    "POST until the deadline or until the shared request budget is spent; append (latency_ms, ok) to `out`."
    con = None
    while time.perf_counter() < deadline:
        with budget["lock"]:
            if budget["left"] <= 0: break
            budget["left"] -= 1
        t0 = time.perf_counter()
        try:
            if con is None: con = http.client.HTTPConnection(host, port, timeout=30)
            con.request("POST", "/predict", body=body, headers={"Content-Type": ctype})
            r = con.getresponse(); r.read(); ok = r.status == 200
        except (OSError, http.client.HTTPException):
            ok = False; con = None
        out.append(((time.perf_counter() - t0) * 1000, ok))
    if con: con.close()


def start_server(model, threads, db):
    with socket.socket() as s: s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    cmd = [sys.executable, "-c", "import sys; from fabguard.cli import main; sys.exit(main())", "serve", "--model", str(model),
           "--port", str(port), "--db", str(db), "--threads", str(threads)]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.time()
    while time.time() - t0 < 120:
        if p.poll() is not None: raise SystemExit(f"server exited: {p.stderr.read().decode()[-2000:]}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2); c.request("GET", "/health")
            if c.getresponse().status == 200: return p, f"http://127.0.0.1:{port}"
        except OSError: time.sleep(0.3)
    p.terminate(); raise SystemExit("server did not start in 120 s")


def main(argv=None):
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument("--model", type=Path, help="serve this .onnx (a `fabguard serve` subprocess with a prediction log)")
    a.add_argument("--url", help="test a server already running on loopback instead")
    a.add_argument("--image", type=Path, help="the image to send (default: a 128-px synthetic PNG)")
    a.add_argument("--duration", type=float, default=30); a.add_argument("--warmup", type=float, default=3)
    a.add_argument("--concurrency", type=int, default=8); a.add_argument("--threads", type=int, default=1, help="server's ORT threads")
    a.add_argument("--max-requests", type=int, default=200_000); a.add_argument("--out", type=Path, help="also write the JSON here")
    a = a.parse_args(argv)
    if bool(a.model) == bool(a.url): raise SystemExit("give --model or --url")
    if a.image: data = a.image.read_bytes()
    else:
        from PIL import Image
        from fabguard.synthetic import synth_image
        b = io.BytesIO(); Image.fromarray(synth_image("Particle", np.random.default_rng(0), size=128)).save(b, "PNG"); data = b.getvalue()
    body, ctype = multipart(data)
    tmp = tempfile.TemporaryDirectory(); db = Path(tmp.name) / "loadtest.sqlite"
    proc, url = start_server(a.model, a.threads, db) if a.model else (None, a.url)
    u = urlsplit(url)
    if u.hostname not in ("127.0.0.1", "localhost", "::1"): raise SystemExit("loopback only")
    try:
        res = {}
        for phase, dur in (("warmup", a.warmup), ("run", a.duration)):
            out, budget = [], {"left": a.max_requests, "lock": threading.Lock()}
            t0 = time.perf_counter(); deadline = t0 + dur
            ths = [threading.Thread(target=worker, args=(u.hostname, u.port, body, ctype, deadline, budget, out)) for _ in range(a.concurrency)]
            for t in ths: t.start()
            for t in ths: t.join()
            res[phase] = (out, time.perf_counter() - t0)
        out, wall = res["run"]
        lat = np.array([ms for ms, ok in out]); errors = sum(not ok for _, ok in out)
        c = http.client.HTTPConnection(u.hostname, u.port); c.request("GET", "/metrics"); server_metrics = json.loads(c.getresponse().read())
        c.request("GET", "/model_info"); info = json.loads(c.getresponse().read())
        report = {"model": info.get("file"), "variant": info.get("variant"), "sha256": info.get("sha256"), "img_size": info.get("img_size"),
                  "image_bytes": len(data), "concurrency": a.concurrency, "server_threads": a.threads, "duration_s": round(wall, 2),
                  "requests": len(out), "errors": errors, "requests_per_s": round(len(out) / wall, 1),
                  "latency_ms": {q: round(float(np.percentile(lat, int(q[1:]))), 2) for q in ("p50", "p90", "p99")} if len(lat) else None,
                  "server_latency_ms": server_metrics.get("latency_ms"),
                  "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()}
    finally:
        if proc: proc.terminate(); proc.wait(30)
    if proc:  # every successful request of warm-up and run was logged
        report["rows_logged"] = sqlite3.connect(db).execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
        report["rows_expected"] = sum(ok for o, _ in res.values() for _, ok in o)
    tmp.cleanup()
    print(json.dumps(report, indent=1))
    if a.out: a.out.write_text(json.dumps(report, indent=1) + "\n")
    return 1 if report["errors"] else 0


if __name__ == "__main__": sys.exit(main())
