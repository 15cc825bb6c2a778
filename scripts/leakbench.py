"""``make leakbench``: the external ``pii-leak-benchmark`` (PyPI, written by others) against Warden.

The benchmark starts its own capture server, which plays the model provider, and drives a
gateway configured to use it as its upstream. This script starts Warden in reverse mode in front
of the two captures (``rules/leakbench.yaml``: plain-HTTP loopback upstreams on fixed ports,
every entity pseudonymized, a temporary store), mints the benchmark a token from the gateway's
embedded issuer and runs, from the benchmark's own venv:

* ``selfcheck --profile pii-v1`` and ``--profile pii-secrets-v1``: the request path (no fixture
  value reaches the capture) and the restore duty (the client reads its own values back);
* ``pii-leak-benchmark-v2``: the response path (echoed pseudonyms restored, values the upstream
  invents masked, also when split across SSE events), with the partial-emission pass.

The token travels as ``Authorization: Bearer`` through the benchmark's documented variables
(``CONFORMANCE_TARGET_API_KEY``), never in argv. It prints a table and writes the reports to
``.bench/leakbench/`` and the Markdown for BENCHMARKS.md to ``.bench/leakbench.md``.

Usage: ``python -m scripts.leakbench [--venv .leakbench-venv] [--seed HEX] [--oracle ORACLE]``
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml
from rich.console import Console
from rich.table import Table

from addons.auth.issuer import EmbeddedIssuer
from scripts.bench import free_port, start, warden_settings, write_markdown
from scripts.setup_certs import main as setup_certs

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RULES = ROOT / "rules" / "leakbench.yaml"
OUT = ROOT / ".bench" / "leakbench"
# A published v2 seed is what makes a row replayable; a fixed default keeps runs comparable.
DEFAULT_SEED = "a1b2c3d4e5f60001"
SELFCHECK_PROFILES = ("pii-v1", "pii-secrets-v1")
console = Console()

# Run in the benchmark's venv: its verdict, as the selfcheck command itself derives it, from its report.
VERDICT = """
import json, sys
from pii_leak_benchmark.selfcheck import verdict_for
report = json.load(open(sys.argv[1]))
verdict, reason = verdict_for(report)
boundary = report["checks"]["configured_upstream_boundary"]
print(json.dumps({"verdict": verdict, "reason": reason,
                  "leaked": sorted(set(boundary["leaked_entity_types"])
                                   | set(boundary["unattributed_leaked_entity_types"])),
                  "tested": sorted(report.get("fixture", {}).get("formats", {})),
                  "failed": sorted(n for n, c in report["checks"].items() if not c.get("passed", True))}))
"""


@dataclass
class Run:
    """One benchmark command's outcome, as the table and the Markdown show it."""

    name: str
    verdict: str
    detail: str


def capture_ports() -> tuple[int, int]:
    """The two capture ports, as rules/leakbench.yaml declares them (one place for both)."""
    ports = {u["name"]: u["port"] for u in yaml.safe_load(RULES.read_text())["upstreams"]}
    return ports["capture-v1"], ports["capture-v2"]


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the captures bind: TIME_WAIT is free
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_warden(work: Path, v1_port: int, v2_port: int) -> tuple[subprocess.Popen, int, int, Path]:
    """Warden in reverse mode, one listener per capture; returns the process, both listeners and the issuer key."""
    certs = work / "certs"
    setup_certs(str(certs))
    gw1, gw2, admin = free_port(), free_port(), free_port()
    cmd = [str(BIN / "mitmdump"), "-s", str(ROOT / "addons" / "gateway.py"),
           "--mode", f"reverse:http://127.0.0.1:{v1_port}@{gw1}", "--mode", f"reverse:http://127.0.0.1:{v2_port}@{gw2}",
           "--listen-host", "127.0.0.1", "--set", f"confdir={certs}", "--set", "flow_detail=0",
           *warden_settings(work, "warden", RULES, admin)]
    proc = start(cmd, work / "warden.log")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"Warden exited {proc.returncode}:\n{(work / 'warden.log').read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{admin}/healthz", timeout=1, trust_env=False).status_code == 200:
                return proc, gw1, gw2, work / "warden-issuer.key"
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit(f"Warden not ready after 60 s:\n{(work / 'warden.log').read_text()}")


def bench(venv: Path, command: str, args: list[str], token: str, log: Path) -> int:
    """One benchmark command from its venv, its output shown and kept; the token only in its environment."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env["CONFORMANCE_TARGET_API_KEY"] = token
    console.rule(f"{command} {' '.join(args)}")
    result = subprocess.run([str(venv / "bin" / command), *args], env=env, cwd=ROOT, capture_output=True, text=True)
    log.write_text(result.stdout + result.stderr)
    console.print(result.stdout + result.stderr, markup=False, highlight=False)
    return result.returncode


def selfcheck(venv: Path, profile: str, gw_port: int, capture_port: int, token: str) -> Run:
    report = OUT / f"selfcheck-{profile}.json"
    report.unlink(missing_ok=True)
    bench(venv, "pii-leak-benchmark", ["selfcheck", "--target-base-url", f"http://127.0.0.1:{gw_port}/v1",
                                       "--profile", profile, "--capture-port", str(capture_port),
                                       "--json-out", str(report)], token, OUT / f"selfcheck-{profile}.log")
    if not report.exists():
        return Run(f"selfcheck {profile}", "NOT MEASURED", f"no report; see {OUT / f'selfcheck-{profile}.log'}")
    found = json.loads(subprocess.run([str(venv / "bin" / "python"), "-c", VERDICT, str(report)],
                                      capture_output=True, text=True, check=True).stdout)
    detail = f"tested {', '.join(found['tested'])}"
    if found["leaked"]:
        detail += f"; leaked {', '.join(found['leaked'])}"
    if found["failed"]:
        detail += f"; failed checks {', '.join(found['failed'])}"
    return Run(f"selfcheck {profile}", found["verdict"], detail)


def v2(venv: Path, gw_port: int, capture_port: int, token: str, seed: str, oracle: str) -> Run:
    out = OUT / "v2"
    summary = out / "summary.json"
    summary.unlink(missing_ok=True)
    bench(venv, "pii-leak-benchmark-v2", ["--out", str(out), "--only", "warden",
                                          "--gateway-url", f"http://127.0.0.1:{gw_port}/v1/chat/completions",
                                          "--upstream-port", str(capture_port), "--seed", seed, "--oracle", oracle,
                                          "--partial-emission", "--json-out", str(summary)], token, OUT / "v2.log")
    if not summary.exists():
        return Run("v2 response path", "NOT MEASURED", f"no summary; see {OUT / 'v2.log'}")
    row = json.loads(summary.read_text())["rows"][0]
    partial = json.loads((out / "warden.partial-emission.json").read_text())["metrics"]
    detail = (f"seed {seed}, oracle {oracle}: fidelity {row['fidelity_rate']}, "
              f"leak single-chunk {row['leak_single_chunk']}, leak adversarial {row['leak_adversarial']}, "
              f"DeltaFrag {row['delta_frag']}, partial emission {partial['partial_emission_rate']['overall']}, "
              f"cases {row['cases_applicable']}/{row['cases_attempted']}, inconclusive {row['inconclusive']}")
    if row["request_path_leak"]:
        detail += f"; request path leaked {', '.join(row['request_path_leak'])}"
    report = json.loads((out / "warden.json").read_text())
    if leaked := report["checks"]["response_injection_containment"]["leaked_entity_types"]:
        arms = report["metrics"]["by_axis"]
        detail += f"; injected values leaked: {', '.join(leaked)} (leak rate by " + "; ".join(
            f"{axis}: " + ", ".join(f"{arm} {arm_row['leak_rate']}" for arm, arm_row in arms[axis].items())
            for axis in ("encoding", "carrier")) + ")"
    return Run("v2 response path", row["outcome"], detail)


def versions(venv: Path) -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    bench_version = subprocess.run([str(venv / "bin" / "python"), "-c",
                                    "import importlib.metadata as m; print(m.version('pii-leak-benchmark'))"],
                                   capture_output=True, text=True).stdout
    from mitmproxy.version import VERSION
    return f"Warden {commit.strip()}, pii-leak-benchmark {bench_version.strip()}, mitmproxy {VERSION}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", type=Path, default=ROOT / ".leakbench-venv", help="the benchmark's venv")
    parser.add_argument("--seed", default=DEFAULT_SEED, help="the v2 fixture seed (hex)")
    parser.add_argument("--oracle", default="exhaustive-2-part",
                        choices=["midpoint", "exhaustive-2-part", "exhaustive-3-part", "union-worst-case"],
                        help="how v2 splits each injected value across SSE events")
    args = parser.parse_args()
    if not (args.venv / "bin" / "pii-leak-benchmark").exists():
        raise SystemExit(f"{args.venv} has no pii-leak-benchmark: run `make leakbench`")
    v1_port, v2_port = capture_ports()
    busy = [port for port in (v1_port, v2_port) if not port_free(port)]
    if busy:
        raise SystemExit(f"capture port {busy} in use (rules/leakbench.yaml declares the capture ports)")
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="warden-leakbench-") as tmp:
        proc, gw1, gw2, issuer_key = start_warden(Path(tmp), v1_port, v2_port)
        try:
            token = EmbeddedIssuer.load_or_create(issuer_key).mint("leakbench", audience="warden", ttl=3600)
            runs = [selfcheck(args.venv, profile, gw1, v1_port, token) for profile in SELFCHECK_PROFILES]
            runs.append(v2(args.venv, gw2, v2_port, token, args.seed, args.oracle))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    report(runs, versions(args.venv))


def report(runs: list[Run], version: str) -> None:
    table = Table(title=f"pii-leak-benchmark through Warden ({version})")
    table.add_column("run")
    table.add_column("verdict")
    table.add_column("detail")
    for run in runs:
        good = run.verdict in ("CLEAN", "pass")
        table.add_row(run.name, f"[{'green' if good else 'red'}]{run.verdict}[/]", run.detail)
    console.print(table)
    lines = ["| run | verdict | detail |", "|---|---|---|", *(f"| {r.name} | {r.verdict} | {r.detail} |" for r in runs)]
    write_markdown("leakbench.md", f"{version}; rules/leakbench.yaml; reports in .bench/leakbench/\n\n"
                   + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
