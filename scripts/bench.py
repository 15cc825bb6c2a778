"""``make bench``: throughput and added latency of the Warden chain against bare mitmdump and a direct call.

One run starts the demo upstream (TLS), a bare ``mitmdump``, a Warden gateway, the same chain
without its identity addon (to price identity) and the spine alone (intake, policy, credentials,
recorder: to price PII masking and what the recorder leaves of the target), then drives small JSON
chat requests at each, in that order, from a separate load process:

* sequential requests (concurrency 1) give p50/p99 latency; added latency is the difference to direct;
* concurrent requests (``--concurrency``, default 8) for ``--seconds`` give requests/s.

The setups take turns for ``--rounds`` rounds and each figure is the median over the rounds:
this machine's neighbours move single runs by a third.

It prints a table and the ratios, and writes the Markdown for BENCHMARKS.md to ``.bench/last.md``.
Usage: ``python -m scripts.bench [--rounds 3] [--seconds 8] [--concurrency 8] [--requests 300]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from addons.auth.issuer import EMBEDDED_ISSUER, EmbeddedIssuer

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
BODY = {"model": "bench", "messages": [{"role": "user", "content": "a small benchmark prompt of a few words"}]}
console = Console()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"a benchmark process exited early: {proc.args!r}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"port {port} did not open in {timeout}s")


# -- the load process -------------------------------------------------------------------------------


async def _load(url: str, proxy: str | None, cafile: str, concurrency: int, seconds: float, requests: int) -> dict:
    context = ssl.create_default_context(cafile=cafile)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(proxy=proxy, verify=context, limits=limits, trust_env=False, timeout=30) as client:
        for _ in range(20):  # warm up: tunnels, TLS sessions, caches
            (await client.post(url, json=BODY)).raise_for_status()
        latencies: list[float] = []
        if requests:
            for _ in range(requests):
                start = time.perf_counter()
                (await client.post(url, json=BODY)).raise_for_status()
                latencies.append(time.perf_counter() - start)
        done = 0
        errors = 0
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done, errors
            while time.perf_counter() < deadline:
                r = await client.post(url, json=BODY)
                if r.status_code == 200:
                    done += 1
                else:
                    errors += 1

        started = time.perf_counter()
        if seconds:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"latencies": latencies, "done": done, "errors": errors, "elapsed": elapsed}


def load_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--proxy")
    p.add_argument("--cafile", required=True)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--requests", type=int, default=300)
    a = p.parse_args(argv)
    print(json.dumps(asyncio.run(_load(a.url, a.proxy, a.cafile, a.concurrency, a.seconds, a.requests))))


# -- the orchestration ------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_load(url: str, proxy: str | None, cafile: Path, args: argparse.Namespace, mode: str) -> dict:
    cmd = [sys.executable, "-m", "scripts.bench", "load", "--url", url, "--cafile", str(cafile),
           "--concurrency", str(args.concurrency)]
    if proxy:
        cmd += ["--proxy", proxy]
    cmd += ["--seconds", "0", "--requests", str(args.requests)] if mode == "latency" else \
           ["--seconds", str(args.seconds), "--requests", "0"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)  # -m finds scripts/ from ROOT
    if out.returncode != 0:
        raise SystemExit(f"the load against {proxy or 'the upstream'} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout)


# Parts of the chain, for pricing each layer; never a way to run the gateway.
PARTIAL_CHAIN = """
from addons.admin import Admin
from addons.config import Config
from addons.credentials import Credentials
from addons.intake import Intake
from addons.pii import PiiMasking
from addons.policy import Policy
from addons.recorder import Recorder
addons = [{addons}]
"""
PARTIAL_SETUPS = {
    "warden without identity": "Config(), Intake(), Policy(), PiiMasking(), Credentials(), Recorder(), Admin()",
    "spine only (no identity, no PII)": "Config(), Intake(), Policy(), Credentials(), Recorder(), Admin()",
}


def warden_settings(work: Path, name: str, rules: Path, admin_port: int) -> list[str]:
    settings = {"warden_rules": rules, "warden_db": work / f"{name}.duckdb", "warden_admin": f"127.0.0.1:{admin_port}",
                "warden_signing_key": work / f"{name}-sign.key", "warden_originals_key": work / f"{name}-orig.key",
                "warden_issuer_key": work / f"{name}-issuer.key"}
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]


def validation_cost() -> dict[str, float]:
    """Microseconds per token validation: a fresh token (signature and claims), and a repeated one (cache)."""
    import asyncio

    from addons.auth.tokens import StaticKeys, TokenValidator

    issuer = EmbeddedIssuer(Ed25519PrivateKey.generate())
    validator = TokenValidator(EMBEDDED_ISSUER, "warden", StaticKeys(issuer.public_keys()))
    tokens = [issuer.mint(f"user{i}") for i in range(500)]

    async def run() -> dict[str, float]:
        start = time.perf_counter()
        for t in tokens:
            await validator.validate(t)
        fresh = (time.perf_counter() - start) / len(tokens) * 1e6
        start = time.perf_counter()
        for _ in range(4):
            for t in tokens:
                await validator.validate(t)
        cached = (time.perf_counter() - start) / (4 * len(tokens)) * 1e6
        return {"fresh_us": fresh, "cached_us": cached}

    return asyncio.run(run())


def conditional_rules(n: int) -> str:
    """``n`` rules with CEL conditions that none of the benchmark's requests matches (every one is weighed), then
    the default allow."""
    kinds = ['"team-{i}" in identity.groups && request.model == "model-{i}"',
             'identity.kind == "service" && request.messages > {i} && time.hour < 25',
             'request.path.startsWith("/v{i}/") || size(request.tools) > {i} + 100']
    rules = "".join(f"  - name: rule-{i}\n    when: '{kinds[i % len(kinds)].format(i=i)}'\n    action: block\n"
                    for i in range(n))
    return rules + "  - name: default\n    action: allow\n"


def policy_cost(rules_path: Path) -> dict[str, float]:
    """Microseconds to decide one request under ``rules_path`` (its facts built, every condition weighed)."""
    from mitmproxy.test import tflow

    from addons.bodies.usage import RequestShape
    from addons.flow.meta import IDENTITY, UPSTREAM, Identity
    from addons.policy import decide, facts_for
    from addons.rules.model import load_rules

    rules = load_rules(rules_path)
    flow = tflow.tflow()
    IDENTITY.set(flow, Identity(sub="bench", groups=["staff", "eng"]))
    UPSTREAM.set(flow, "demo")
    shape = RequestShape(model="demo", messages=1)
    n = 5000
    start = time.perf_counter()
    for _ in range(n):
        decision = decide(rules, flow, facts_for(rules, flow, shape))
    assert decision.rule == "default"
    return {"rules": len(rules.rules), "us": (time.perf_counter() - start) / n * 1e6}


def answers_cost() -> dict[str, float]:
    """Answer rules (three patterns, block and mask): microseconds per SSE event of a chat stream screened as it
    passes (four characters a delta, nothing matching), and milliseconds for a 45 KB JSON answer screened whole."""
    from addons.masking.payloads import adapter_for
    from addons.rules.answers import AnswerCheck, AnswerRule
    from addons.rules.conditions import Facts
    from addons.screening.documents import screen_text
    from addons.screening.screen import Screen
    from addons.screening.stream import StreamScreen

    checks = [AnswerCheck.of(AnswerRule(name="wipe", match=[r"rm\s+-rf\s+/", r"mkfs\.\w+"], action="block")),
              AnswerCheck.of(AnswerRule(name="keys", match=["AKIA[0-9A-Z]{16}"], action="mask"))]

    def screen() -> Screen:
        return Screen(checks, Facts({}, {}, {}).for_answers(), dict)

    text = "The quick brown fox jumps over the lazy dog; run the tests and then deploy. " * 60
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": "demo"}
    events = [f"data: {json.dumps({**base, 'choices': [{'index': 0, 'delta': {'content': text[i:i + 4]}}]})}\n\n"
              .encode() for i in range(0, len(text), 4)]
    stream_s = body_s = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        screened = StreamScreen(adapter_for("/v1/chat/completions"), screen())
        for event in events:
            screened(event)
        screened(b"")
        stream_s = min(stream_s, time.perf_counter() - start)
    body = json.dumps({"choices": [{"message": {"content": text * 10}}]})
    for _ in range(20):
        start = time.perf_counter()
        screen_text(body, "application/json", screen())
        body_s = min(body_s, time.perf_counter() - start)
    return {"event_us": stream_s / len(events) * 1e6, "body_ms": body_s * 1e3, "body_kb": len(body) / 1000}


def start(cmd: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT, env=env)


def mitmdump_common(certs: Path) -> list[str]:
    """The options every benchmarked mitmdump shares: loopback, the gateway CA, quiet, the demo upstream trusted."""
    return ["--listen-host", "127.0.0.1", "--set", f"confdir={certs}", "--set", "flow_detail=0",
            "--set", f"ssl_verify_upstream_trusted_ca={certs / 'upstream-trust.pem'}"]


def start_upstream(certs: Path, port: int, work: Path) -> subprocess.Popen:
    return start([sys.executable, "-m", "scripts.demo_upstream", "--host", "127.0.0.1", "--port", str(port),
                  "--tls-cert", str(certs / "demo-upstream.pem"), "--tls-key", str(certs / "demo-upstream.key")],
                 work / "upstream.log")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "load":
        load_main(sys.argv[2:])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="rounds; each figure is the median over them")
    p.add_argument("--seconds", type=float, default=8, help="duration of each throughput run")
    p.add_argument("--concurrency", type=int, default=8, help="concurrent connections in throughput runs")
    p.add_argument("--requests", type=int, default=300, help="sequential requests for latency")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="warden-bench-"))
    certs = ROOT / "certs"
    up_port, bare_port, warden_port, admin_port = free_port(), free_port(), free_port(), free_port()
    rules = work / "rules.yaml"
    upstreams = (f"upstreams:\n  - name: demo\n    host: localhost\n    port: {up_port}\n"
                 "    credential: {header: Authorization, value: 'Bearer bench-key'}\n")
    rules.write_text(upstreams + "rules:\n  - name: default\n    action: allow\n")
    conditional = work / "rules-50-conditions.yaml"
    conditional.write_text(upstreams + "rules:\n" + conditional_rules(50))
    common = mitmdump_common(certs)
    procs = [
        start_upstream(certs, up_port, work),
        start([str(BIN / "mitmdump"), "--mode", f"regular@{bare_port}", *common], work / "bare.log"),
        start([str(BIN / "mitmdump"), "-s", str(ROOT / "addons" / "gateway.py"), "--mode", f"regular@{warden_port}",
               *common, *warden_settings(work, "chain", rules, admin_port)], work / "warden.log"),
    ]
    ports = [up_port, bare_port, warden_port, admin_port]
    waits = [procs[0], procs[1], procs[2], procs[2]]
    partial_ports = {}
    for n, (name, chain) in enumerate(PARTIAL_SETUPS.items()):
        script = work / f"partial{n}.py"
        script.write_text(PARTIAL_CHAIN.format(addons=chain))
        port, admin = free_port(), free_port()
        procs.append(start([str(BIN / "mitmdump"), "-s", str(script), "--mode", f"regular@{port}",
                            *common, *warden_settings(work, f"partial{n}", rules, admin)], work / f"partial{n}.log"))
        partial_ports[name] = port
        ports += [port, admin]
        waits += [procs[-1], procs[-1]]
    policy_port, policy_admin = free_port(), free_port()
    procs.append(start([str(BIN / "mitmdump"), "-s", str(ROOT / "addons" / "gateway.py"), "--mode",
                        f"regular@{policy_port}", *common,
                        *warden_settings(work, "conditions", conditional, policy_admin)], work / "conditions.log"))
    ports += [policy_port, policy_admin]
    waits += [procs[-1], procs[-1]]
    try:
        for port, proc in zip(ports, waits, strict=True):
            wait_port(port, proc)
        token = EmbeddedIssuer.load_or_create(work / "chain-issuer.key").mint("bench", ttl=3600)
        url = f"https://localhost:{up_port}/v1/chat/completions"
        setups = {
            "direct": (None, certs / "demo-upstream-ca.pem"),
            "bare mitmdump": (f"http://127.0.0.1:{bare_port}", certs / "mitmproxy-ca-cert.pem"),
            "warden chain": (f"http://bench:{token}@127.0.0.1:{warden_port}", certs / "mitmproxy-ca-cert.pem"),
            "warden chain, 50 conditional rules": (
                f"http://bench:{EmbeddedIssuer.load_or_create(work / 'conditions-issuer.key').mint('bench', ttl=3600)}"
                f"@127.0.0.1:{policy_port}", certs / "mitmproxy-ca-cert.pem"),
        } | {name: (f"http://127.0.0.1:{port}", certs / "mitmproxy-ca-cert.pem")
             for name, port in partial_ports.items()}
        runs: dict[str, list[dict]] = {name: [] for name in setups}
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("benchmarking", total=len(setups) * 2 * args.rounds)
            for round_ in range(1, args.rounds + 1):
                for name, (proxy, cafile) in setups.items():
                    progress.update(task, description=f"round {round_}: {name}, latency")
                    lat = run_load(url, proxy, cafile, args, "latency")
                    progress.advance(task)
                    progress.update(task, description=f"round {round_}: {name}, throughput")
                    thr = run_load(url, proxy, cafile, args, "throughput")
                    progress.advance(task)
                    ms = [x * 1000 for x in lat["latencies"]]
                    runs[name].append({"p50": statistics.median(ms), "p99": percentile(ms, 0.99),
                                       "rps": thr["done"] / thr["elapsed"], "errors": thr["errors"]})
        results = {
            name: {key: statistics.median(r[key] for r in rs) for key in ("p50", "p99", "rps")}
            | {"errors": sum(r["errors"] for r in rs), "rps_runs": [round(r["rps"]) for r in rs]}
            for name, rs in runs.items()
        }
        report(results, args, policy_cost(conditional))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


def report(results: dict[str, dict], args: argparse.Namespace, policy: dict[str, float]) -> None:
    direct, bare, warden = results["direct"], results["bare mitmdump"], results["warden chain"]
    conditional = results["warden chain, 50 conditional rules"]
    anon, spine = results["warden without identity"], results["spine only (no identity, no PII)"]
    tokens = validation_cost()
    answers = answers_cost()
    table = Table(title="small JSON chat requests through TLS")
    for col in ("setup", "req/s (median)", "per round", "p50 ms", "p99 ms", "added p50 ms", "errors"):
        table.add_column(col, justify="right")
    lines = ["| setup | req/s (median) | req/s per round | p50 ms | p99 ms | added p50 vs direct (ms) | errors |",
             "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        added = r["p50"] - direct["p50"]
        per_round = " / ".join(str(x) for x in r["rps_runs"])
        table.add_row(name, f"{r['rps']:.0f}", per_round, f"{r['p50']:.2f}", f"{r['p99']:.2f}", f"{added:.2f}",
                      str(r["errors"]))
        lines.append(f"| {name} | {r['rps']:.0f} | {per_round} | {r['p50']:.2f} | {r['p99']:.2f} | {added:.2f} | "
                     f"{r['errors']} |")
    console.print(table)
    ratios = [
        f"warden / bare mitmdump throughput: {warden['rps'] / bare['rps']:.0%} (target >= 85%)",
        f"warden / direct throughput: {warden['rps'] / direct['rps']:.0%}",
        f"bare mitmdump / direct throughput: {bare['rps'] / direct['rps']:.0%}",
        f"warden added p50 over bare mitmdump: {warden['p50'] - bare['p50']:.2f} ms",
        (f"identity on / off throughput: {warden['rps'] / anon['rps']:.0%}; "
         f"p50 {warden['p50']:.2f} vs {anon['p50']:.2f} ms"),
        (f"spine only (intake, policy, credentials, recorder) / bare mitmdump throughput: "
         f"{spine['rps'] / bare['rps']:.0%}; added p50 over bare {spine['p50'] - bare['p50']:.2f} ms"),
        (f"token validation: {tokens['fresh_us']:.0f} us fresh (signature + claims), "
         f"{tokens['cached_us']:.1f} us cached"),
        (f"policy: {policy['us']:.1f} us per request to weigh {policy['rules']:.0f} rules with CEL conditions "
         f"(facts built, every condition evaluated; target < 50 us); throughput with them / one rule: "
         f"{conditional['rps'] / warden['rps']:.0%}, p50 {conditional['p50']:.2f} vs {warden['p50']:.2f} ms"),
        (f"answer rules (3 patterns): {answers['event_us']:.0f} us per SSE event screened as it passes, "
         f"{answers['body_ms']:.2f} ms for a {answers['body_kb']:.0f} KB JSON answer"),
    ]
    for line in ratios:
        console.print(line)
    setup = (f"{args.rounds} rounds, setups taking turns; medians. {args.concurrency} concurrent connections for "
             f"{args.seconds:.0f} s (throughput); {args.requests} sequential requests (latency). Client, upstream "
             "and proxy share the machine.")
    write_markdown("last.md", setup + "\n\n" + "\n".join(lines) + "\n\n" + "\n".join(f"- {r}" for r in ratios) + "\n")


def write_markdown(name: str, body: str) -> None:
    """``.bench/NAME``: ``body`` under a heading with the date and the machine, ready for BENCHMARKS.md."""
    machine = f"{platform.node()}, {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
    path = ROOT / ".bench" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"### {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {machine}\n\n{body}")
    console.print(f"Markdown for BENCHMARKS.md: {path}")


if __name__ == "__main__":
    main()
