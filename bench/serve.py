"""Served images/s and latency under concurrent clients: the new server (uvicorn, dynamic
batching) beside the server this session started from (`http.server`, one forward pass at
a time, one request per connection), against the predictor called in-process, all on the
same model, images and machine in one run.

- model: a `resnet-lite` SSD300 with 2 classes, random weights (speed does not depend on
  them), as the issue measured;
- images: the real photographs of `tests/fixtures/mxnet/images/` (JPEG, 0.1-0.5 MP);
- in-process limits: `predict()` one image at a time (decode + forward, batch 1), and the
  best batch (decode of each image, then `forward_many` at batch 1..16: the best images/s);
- clients: threads in this process, each sending one image after another for `--seconds`
  (keep-alive where the server allows it: the old one closes after each answer), at 1,
  8 and 32 concurrent clients; then 64
  clients against a queue timeout of 2 s: nobody may wait longer (the rest get 503).

Run: `.venv/bin/python bench/serve.py [--seconds 15]` on a quiet machine (the
clients and servers share its cores). Writes `bench/results/serve.json`, prints the table.
The old server is read from git (`OLD_COMMIT`), never stored here.
"""

from __future__ import annotations

import argparse
import http.client
import re
import select
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table, write_results

ROOT = Path(__file__).resolve().parents[1]
IMAGES = sorted((ROOT / "tests" / "fixtures" / "mxnet" / "images").glob("*.jpg"))[:8]
OLD_COMMIT = "af4a252"  # the server before issue 28: sdod/serve/http.py
OLD_RUNNER = """
import sys
sys.path.insert(0, {folder!r})
import old_http
from sdod.serve.predictor import Predictor
server = old_http.make_server(Predictor.load({model!r}), "127.0.0.1", 0)
print(f"http://127.0.0.1:{{server.server_port}}", flush=True)
server.serve_forever()
"""


def write_model(path: Path) -> Path:
    import torch
    from safetensors.torch import save

    from sdod.artifact import Artifact, ModelConfig, write_artifact
    from sdod.model.networks import build_network

    torch.manual_seed(0)
    config = ModelConfig("resnet-lite", 2, 300, ("a", "b"))
    state = {k: v.contiguous() for k, v in build_network(config).state_dict().items()}
    hp = {"base_network": "resnet-lite", "num_classes": "2", "image_shape": "300"}
    return write_artifact(path, Artifact(save(state), hp, config.to_dict(), {}))


def in_process(model: Path, images: list[bytes], seconds: float) -> dict[str, float]:
    """Images/s of the predictor alone: batch 1 end to end, and the best batch."""
    import torch

    from sdod.serve.predictor import Predictor

    predictor = Predictor.load(model)
    for data in images[:2]:
        predictor.predict(data)
    done, started = 0, time.monotonic()
    while time.monotonic() - started < seconds:
        predictor.predict(images[done % len(images)])
        done += 1
    batch1 = done / (time.monotonic() - started)
    best = 0.0
    for size in (2, 4, 8, 16):
        chosen = [images[i % len(images)] for i in range(size)]
        runs, started = 0, time.monotonic()
        while time.monotonic() - started < seconds / 4:
            prepared = torch.cat([predictor.prepare(d) for d in chosen])
            predictor.forward_many(prepared, [(0.0, None)] * size)
            runs += 1
        best = max(best, runs * size / (time.monotonic() - started))
    return {"batch1": batch1, "best_batch": max(best, batch1)}


def start(argv: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 180)
    line = proc.stdout.readline().decode() if ready else ""
    match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    if match is None:
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    port = int(match.group(1))
    deadline = time.monotonic() + 120
    while post(port, None, "GET", "/ping")[0] != 200:  # workers still loading
        if time.monotonic() > deadline:
            raise SystemExit("server never answered /ping")
        time.sleep(0.2)
    return proc, port


def post(
    port: int,
    body: bytes | None,
    method: str = "POST",
    path: str = "/invocations",
    conn: http.client.HTTPConnection | None = None,
) -> tuple[int, float]:
    """One request; on `conn` when given (http.client reopens it when the server closed
    it: keep-alive where the server keeps connections, a new one per request where not)."""
    started = time.monotonic()
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "image/jpeg"})
        response = conn.getresponse()
        response.read()
        if response.will_close:
            conn.close()
        return response.status, time.monotonic() - started
    except OSError:
        conn.close()
        return 0, time.monotonic() - started


def load(port: int, images: list[bytes], clients: int, seconds: float) -> dict[str, float]:
    """`clients` threads, each posting images back to back for `seconds`."""
    results: list[tuple[int, float]] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(k: int) -> None:
        mine, n = [], k
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while time.monotonic() < stop:
            mine.append(post(port, images[n % len(images)], conn=conn))
            n += clients
        conn.close()
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    ok = sorted(s for status, s in results if status == 200)
    q = statistics.quantiles(ok, n=100) if len(ok) > 1 else [0.0] * 99
    return {
        "images_per_s": len(ok) / elapsed,
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "max_ms": (ok[-1] if ok else 0.0) * 1000,
        "busy_503": sum(1 for status, _ in results if status == 503),
        "errors": sum(1 for status, _ in results if status not in (200, 503)),
    }


def measure(
    name: str, launch: Callable[[], tuple[subprocess.Popen[bytes], int]], images: list[bytes],
    levels: list[int], seconds: float,
) -> list[dict]:  # fmt: skip
    proc, port = launch()
    rows = []
    try:
        load(port, images, 2, 2.0)  # warm-up
        for clients in levels:
            rows.append(
                {"server": name, "clients": clients, **load(port, images, clients, seconds)}
            )
            print(
                f"  {name}, {clients} clients: {rows[-1]['images_per_s']:.1f} images/s", flush=True
            )
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    images = [p.read_bytes() for p in IMAGES]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = write_model(folder / "model.tar.gz")
        limits = in_process(model, images, args.seconds)
        batch1, best = limits["batch1"], limits["best_batch"]
        print(f"in-process: batch 1 {batch1:.1f}, best batch {best:.1f} images/s")
        old = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{OLD_COMMIT}:sdod/serve/http.py"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        (folder / "old_http.py").write_text(old)
        runner = OLD_RUNNER.format(folder=str(folder), model=str(model))
        sdod = [sys.executable, "-m", "sdod", "serve", "--model", str(model), "--port", "0"]
        rows = measure(
            "old (http.server)", lambda: start([sys.executable, "-c", runner]), images,
            [1, 8, 32, 64], args.seconds,
        )  # fmt: skip
        rows += measure("new", lambda: start(sdod), images, [1, 8, 32], args.seconds)
        rows += measure(
            "new, queue timeout 2 s", lambda: start([*sdod, "--queue-timeout", "2"]), images,
            [64], args.seconds,
        )  # fmt: skip
    for row in rows:
        row["vs_batch1"] = row["images_per_s"] / limits["batch1"]
        for key, value in list(row.items()):
            if isinstance(value, float):
                row[key] = round(value, 2)
    write_results("serve", [{"in_process": limits}, *rows])
    columns = ["server", "clients", "images_per_s", "vs_batch1", "p50_ms", "p99_ms", "max_ms"]
    print(table(rows, [*columns, "busy_503", "errors"]))


if __name__ == "__main__":
    main()
