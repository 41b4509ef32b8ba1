"""Load test of ``slimsql serve`` with the embedded model, on loopback, bounded in time and count.

A server on a copy of the demo database; ``--clients`` threads for ``--seconds`` seconds
(and at most ``--max-requests`` requests in all), each in a loop of:

* ``ask``: a demo question (POST /v1/ask), the model in the loop;
* ``sql``: a hand-written read-only query (POST /v1/sql);
* ``attack``: a write or file access (POST /v1/sql) that must be refused (422 unsafe_sql).

Every response is sorted: answered (200), the model's query did not run (422 from /v1/ask:
a wrong answer, not a server failure), refused as intended (the attacks), busy (503 with
Retry-After: the bounded queue doing its job; the client waits Retry-After, at most 2 s),
and failed (anything else: a 500, a timeout, a dropped connection, an attack that ran).
The server's resident memory is sampled every second; the database's bytes and its
folder's listing are compared before and after.

    python benchmarks/load_test.py   # -> benchmarks/results/load-test-<model>-<preset>.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
from latency import DEMO_EXTRA, ROOT, percentile
from serving import rss_mib, server

from slimsql.demo import DEMO_QUESTIONS, build_demo

QUERIES = (
    "SELECT count(*) FROM orders",
    "SELECT status, count(*) FROM orders GROUP BY status",
    "SELECT c.country, round(sum(p.amount), 2) FROM customers c JOIN orders o ON o.customer_id = c.customer_id "
    "JOIN payments p ON p.order_id = o.order_id GROUP BY c.country ORDER BY 2 DESC",
    "SELECT name, price FROM products ORDER BY price DESC LIMIT 10",
    "SELECT * FROM order_items",  # over the row cap: truncated
    "SELECT strftime('%Y', order_date) AS year, count(*) FROM orders GROUP BY year",
)
ATTACKS = (
    "DELETE FROM orders",
    "UPDATE products SET price = 0",
    "DROP TABLE customers",
    "WITH x AS (SELECT 1) DELETE FROM payments",
    "SELECT 1; DROP TABLE orders",
    "ATTACH DATABASE '/tmp/slimsql-load-attack.db' AS x",
    "VACUUM INTO '/tmp/slimsql-load-attack.db'",
    "PRAGMA query_only = 0",
    "SELECT load_extension('/tmp/x.so')",
)
KINDS = {"ask": 0.5, "sql": 0.35, "attack": 0.15}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def client_loop(base: str, kind_rng: random.Random, stop: threading.Event, budget: list[int],
                lock: threading.Lock, log: list[dict]) -> None:
    questions = DEMO_QUESTIONS + DEMO_EXTRA
    with httpx.Client(base_url=base, timeout=120) as client:
        while not stop.is_set():
            with lock:
                if budget[0] <= 0:
                    return
                budget[0] -= 1
            kind = kind_rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
            if kind == "ask":
                path, body = "/v1/ask", {"db": "shop", "question": kind_rng.choice(questions)}
            else:
                path, body = "/v1/sql", {"db": "shop", "sql": kind_rng.choice(QUERIES if kind == "sql" else ATTACKS)}
            start = time.perf_counter()
            try:
                response = client.post(path, json=body)
                status = response.status_code
                code = response.json().get("error", {}).get("code") if status != 200 else None
                retry = response.headers.get("Retry-After")
            except (httpx.HTTPError, ValueError) as err:
                status, code, retry = 0, type(err).__name__, None
            seconds = time.perf_counter() - start
            if status == 200 and kind == "attack":
                outcome = "failed"  # an attack that ran
            elif status == 200:
                outcome = "answered"
            elif status == 503:
                outcome = "busy"
            elif kind == "attack" and status == 422 and code == "unsafe_sql":
                outcome = "refused"
            elif kind == "ask" and status == 422 and code in ("query_error", "query_timeout", "no_sql", "unsafe_sql"):
                outcome = "model_query_failed"
            else:
                outcome = "failed"
            with lock:
                log.append({"kind": kind, "status": status, "code": code, "outcome": outcome,
                            "seconds": round(seconds, 3), "t": time.monotonic()})
            if status == 503:
                stop.wait(min(2.0, float(retry or 1)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--max-requests", type=int, default=5000)
    parser.add_argument("--max-queue", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not 1 <= args.clients <= 64 or not 1 <= args.seconds <= 1800:
        parser.error("--clients must be 1..64 and --seconds 1..1800 (a bounded test)")
    folder = Path(tempfile.mkdtemp(prefix="slimsql-load-"))
    db = build_demo(folder / "shop.sqlite")
    before, listing = sha256(db), sorted(os.listdir(folder))
    os.environ["SLIMSQL_PREFIX_DIR"] = str(folder / "prefix")
    log: list[dict] = []
    memory: list[tuple[float, float]] = []
    stop, lock, budget = threading.Event(), threading.Lock(), [args.max_requests]
    with server([db], ["--model", args.model, "--preset", args.preset, "--max-queue", str(args.max_queue)],
                log=folder.parent / f"{folder.name}-serve.log") as (base, proc):
        threads = [threading.Thread(target=client_loop, args=(base, random.Random(args.seed + i), stop, budget,
                                                              lock, log), daemon=True) for i in range(args.clients)]
        start = time.monotonic()
        for t in threads:
            t.start()
        while time.monotonic() - start < args.seconds and any(t.is_alive() for t in threads):
            memory.append((round(time.monotonic() - start, 1), round(rss_mib(proc.pid), 1)))
            time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(timeout=180)
        elapsed = time.monotonic() - start
        health = httpx.get(base + "/v1/health", timeout=10).json()
    after, listing_after = sha256(db), sorted(p for p in os.listdir(folder) if p != "prefix")
    outcomes = {o: sum(r["outcome"] == o for r in log) for o in
                ("answered", "model_query_failed", "refused", "busy", "failed")}
    per_kind = {}
    for kind in KINDS:
        done = [r["seconds"] for r in log if r["kind"] == kind and r["outcome"] != "busy"]
        per_kind[kind] = {"requests": sum(r["kind"] == kind for r in log), "completed": len(done),
                          "per_s": round(len(done) / elapsed, 3),
                          "p50_s": round(statistics.median(done), 3) if done else None,
                          "p95_s": round(percentile(done, 0.95), 3) if done else None}
    fifth = max(1, len(memory) // 5)
    rss = [m for _, m in memory]
    results = {
        "benchmark": "slimsql serve load test (loopback)", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(), "model": args.model, "preset": args.preset, "clients": args.clients,
        "max_queue": args.max_queue, "seconds": round(elapsed, 1), "command": "python " + " ".join(sys.argv),
        "requests": len(log), "outcomes": outcomes, "failures": [r for r in log if r["outcome"] == "failed"][:20],
        "per_kind": per_kind, "queue_after": health.get("queue"),
        "memory_mib": {"first_fifth_median": statistics.median(rss[:fifth]) if rss else None,
                       "last_fifth_median": statistics.median(rss[-fifth:]) if rss else None,
                       "max": max(rss) if rss else None, "samples": memory[::5]},
        "database": {"sha256_unchanged": before == after, "folder_unchanged": listing == listing_after,
                     "attack_files_created": [p for p in ("/tmp/slimsql-load-attack.db",) if os.path.exists(p)]},
    }
    out = args.out or ROOT / "benchmarks" / "results" / f"load-test-{args.model}-{args.preset}.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps({k: results[k] for k in ("requests", "outcomes", "per_kind", "database")}, indent=1))
    print(f"memory MiB: {results['memory_mib']['first_fifth_median']} -> {results['memory_mib']['last_fifth_median']}"
          f" (max {results['memory_mib']['max']})\nwrote {out}")
    return 0 if outcomes["failed"] == 0 and before == after else 1


if __name__ == "__main__":
    sys.exit(main())
