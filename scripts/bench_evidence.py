"""``make bench-evidence``: the evidence side on a large store, stopped and through a running gateway under load.

A store of ``--flows`` recorded flows (default 1,000,000, about 2 KB request and 2 KB response bodies each) is
written once through the store's own write path (``scripts/bench_store.py``) and kept in ``--store``'s folder
for later runs. Then, each timed as the ``warden`` command a user runs (a new process, wall clock):

* on the stopped store: ``warden verify`` (the whole chain from its genesis), a filtered ``warden flows`` search,
  a full-text ``warden flows --text`` search, and ``warden evidence`` for every flow; then the same again while a
  gateway on another store serves a load on the same machine;
* through a running gateway on that store, while a load process keeps sending requests through it: the same
  commands through its admin API, and the gateway's throughput meanwhile against its throughput idle.

It prints a table and writes the Markdown for BENCHMARKS.md to ``.bench/evidence.md``.
Usage: ``python -m scripts.bench_evidence [--flows 1000000] [--store .bench/store/warden.duckdb]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

from addons.auth.issuer import EmbeddedIssuer
from scripts.bench import free_port, mitmdump_common, run_load, start, start_upstream, wait_port
from scripts.bench_store import generate

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
console = Console()
TARGETS = {"verify": 60.0, "search": 1.0, "evidence": 60.0}


def warden(store: Path, *args: str, admin: str | None = None, env: dict | None = None) -> tuple[float, str]:
    """Run one ``warden`` command as a user would; returns its wall-clock seconds and its output."""
    cmd = [str(BIN / "warden"), "--db", str(store)] + (["--admin", admin] if admin else []) + list(args)
    started = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    elapsed = time.perf_counter() - started
    if out.returncode not in (0, 3):  # 3: an unsigned tail, which a stopped store of a clean close never has
        raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return elapsed, out.stdout


def commands(store: Path, work: Path, pub: Path, key: Path) -> dict[str, list[str]]:
    since = (datetime.now(UTC) - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%S")
    return {
        "verify": ["verify", "--pubkey", str(pub), "--json"],
        "search": ["flows", "--user", "user042", "--since", since, "--limit", "100", "--json"],
        "text search": ["flows", "--text", "T0777777", "--limit", "10", "--json"],
        "evidence": ["evidence", "--from", "60d", "-o", str(work / "pack.zip"),
                     "--signing-key", str(key)],
    }


def stopped(store: Path, work: Path, pub: Path, key: Path) -> dict[str, float]:
    results = {}
    for name, args in commands(store, work, pub, key).items():
        console.print(f"stopped store: {name}...")
        results[name], _ = warden(store, *args)
    return results


@contextmanager
def gateway(store: Path, work: Path, key: Path) -> Iterator[dict[str, object]]:
    """A gateway recording to ``store`` (with the demo upstream), stopped at the end: its load URL, proxy, admin
    API and the environment its admin token needs."""
    certs = ROOT / "certs"
    up_port, proxy_port, admin_port = free_port(), free_port(), free_port()
    rules = work / f"rules-{store.stem}.yaml"
    rules.write_text(f"upstreams:\n  - name: demo\n    host: localhost\n    port: {up_port}\n"
                     "rules:\n  - name: default\n    action: allow\n")
    settings = {"warden_rules": rules, "warden_db": store, "warden_admin": f"127.0.0.1:{admin_port}",
                "warden_signing_key": key, "warden_originals_key": work / "orig.key",
                "warden_issuer_key": work / "issuer.key"}
    procs = [start_upstream(certs, up_port, work),
             start([str(BIN / "mitmdump"), "-s", str(ROOT / "addons" / "gateway.py"), "--mode", f"regular@{proxy_port}",
                    *mitmdump_common(certs), *[a for k, v in settings.items() for a in ("--set", f"{k}={v}")]],
                   work / f"gateway-{store.stem}.log")]
    try:
        wait_port(up_port, procs[0])
        wait_port(admin_port, procs[1], timeout=120)
        token = EmbeddedIssuer.load_or_create(work / "issuer.key").mint("bench", ttl=7200)
        yield {"url": f"https://localhost:{up_port}/v1/chat/completions",
               "proxy": f"http://bench:{token}@127.0.0.1:{proxy_port}", "admin": f"127.0.0.1:{admin_port}",
               "env": {**os.environ, "WARDEN_ISSUER_KEY": str(work / "issuer.key"), "WARDEN_RULES": str(rules)}}
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=60)


@contextmanager
def loaded(gw: dict[str, object]) -> Iterator[None]:
    """A load process sending requests through the gateway ``gw`` at 4 concurrent connections, until the end."""
    load = subprocess.Popen(
        [sys.executable, "-m", "scripts.bench", "load", "--url", str(gw["url"]), "--proxy", str(gw["proxy"]),
         "--cafile", str(ROOT / "certs" / "mitmproxy-ca-cert.pem"), "--concurrency", "4", "--seconds", "3600",
         "--requests", "0"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        time.sleep(2)
        yield
    finally:
        load.terminate()
        load.wait(timeout=30)


def beside(store: Path, work: Path, pub: Path, key: Path) -> dict[str, float]:
    """The commands on the stopped store while a gateway on another store serves a load on the same machine."""
    results = {}
    with gateway(work / "other.duckdb", work, work / "other-signing.key") as gw, loaded(gw):
        for name, args in commands(store, work, pub, key).items():
            console.print(f"stopped store, a gateway serving beside: {name}...")
            results[name], _ = warden(store, *args)
    return results


def running(store: Path, work: Path, pub: Path, key: Path, seconds: float) -> dict[str, object]:
    """The same commands through a gateway on ``store``, a load sending requests through it all the while."""
    results: dict[str, object] = {}
    cafile = ROOT / "certs" / "mitmproxy-ca-cert.pem"
    load_args = argparse.Namespace(concurrency=4, seconds=seconds, requests=0)
    with gateway(store, work, key) as gw:
        idle = run_load(str(gw["url"]), str(gw["proxy"]), cafile, load_args, "throughput")
        results["rps idle"] = idle["done"] / idle["elapsed"]
        for name, args in commands(store, work, pub, key).items():
            console.print(f"running gateway: {name} (under load)...")
            with loaded(gw):
                results[name], _ = warden(store, *args, admin=str(gw["admin"]), env=gw["env"])  # type: ignore[arg-type]
        busy = run_load(str(gw["url"]), str(gw["proxy"]), cafile, load_args, "throughput")
        results["rps after"] = busy["done"] / busy["elapsed"]
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--flows", type=int, default=1_000_000)
    p.add_argument("--store", type=Path, default=ROOT / ".bench" / "store" / "warden.duckdb")
    p.add_argument("--seconds", type=float, default=8, help="duration of each throughput run")
    args = p.parse_args()
    key = args.store.with_name("warden-signing.key")
    made = None
    if not args.store.exists():
        made = generate(args.store, key, args.flows)
    pub = key.with_suffix(".pub")
    work = Path(tempfile.mkdtemp(prefix="warden-bench-evidence-"))
    off = stopped(args.store, work, pub, key)
    near = beside(args.store, work, pub, key)
    on = running(args.store, work, pub, key, args.seconds)
    report(args, made, off, near, on)


def report(args: argparse.Namespace, made: dict | None, off: dict[str, float], near: dict[str, float],
           on: dict[str, object]) -> None:
    table = Table(title=f"evidence on {args.flows:,} flows ({args.store})")
    for column in ("command", "stopped store (s)", "stopped, a gateway serving beside (s)",
                   "through the gateway, under load (s)", "target (s)"):
        table.add_column(column)
    lines = ["| command | stopped store | stopped, a gateway serving a load beside | through the running gateway, "
             "under load | target |", "|---|---|---|---|---|"]
    for name, seconds in off.items():
        target = TARGETS.get(name.split()[-1])
        through = on.get(name)
        row = (name, f"{seconds:.2f}", f"{near[name]:.2f}", f"{through:.2f}" if isinstance(through, float) else "-",
               f"< {target:.0f}" if target else "-")
        table.add_row(*row)
        lines.append("| " + " | ".join(row) + " |")
    console.print(table)
    rps = (f"gateway throughput while the commands ran: idle {on['rps idle']:.0f} req/s before, "
           f"{on['rps after']:.0f} req/s after (concurrency 4)")
    console.print(rps)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    generated = (f"; store written through the store's write path in {made['seconds']:.0f} s "
                 f"({made['events_per_second']:.0f} events/s, {made['bytes'] / 1e9:.1f} GB)") if made else ""
    body = "\n".join([f"Run {when} on {machine}{generated}.", "", *lines, "", rps, ""])
    out = ROOT / ".bench" / "evidence.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(body)
    console.print(f"Markdown for BENCHMARKS.md: {out}")
    print(json.dumps({"stopped": off, "beside": near, "running": on}))


if __name__ == "__main__":
    main()
