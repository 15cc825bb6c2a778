"""``pip install .`` (not editable) gives a working ``warden`` and a loadable chain.

The project is built into a wheel from a copy of its sources and installed into a fresh venv, offline,
reusing this venv's dependencies; then ``warden`` and ``mitmdump -s .../addons/gateway.py`` run from that
venv with no PYTHONPATH and outside the checkout, so only what the wheel holds can be imported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, start_gateway

pytestmark = pytest.mark.e2e

# What the wheel is built from: the packages and what pyproject.toml names.
SOURCES = ("addons", "scripts", "pyproject.toml", "README.md")
# mitmproxy comes from this venv, so its console script is not in the new venv's bin: run the same entry point.
RUN_MITMDUMP = "import sys; from mitmproxy.tools.main import mitmdump; sys.exit(mitmdump())"


@dataclass(frozen=True)
class Install:
    venv: Path
    site_packages: Path
    wheel: Path
    sources: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def warden(self) -> Path:
        return self.venv / "bin" / "warden"


def clean_env() -> dict[str, str]:
    """This process's environment without what could put the checkout on a child's path."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a command in a clean environment (no PYTHONPATH) with ``cwd`` outside the checkout; it must succeed."""
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=180,
                            env={**clean_env(), **(env or {})})
    assert result.returncode == 0, f"{args} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def install(tmp_path_factory) -> Install:
    base = tmp_path_factory.mktemp("install")
    sources = base / "src"  # a copy: the build writes build/ and *.egg-info beside the sources, not in the checkout
    sources.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, sources / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(ROOT / name, sources / name)
    venv = base / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=base)
    python = venv / "bin" / "python"
    site_packages = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))",
                             cwd=base).stdout.strip())
    # This venv's dependencies as plain path entries: their .pth files (the editable install's finder) stay unread.
    (site_packages / "_warden_test_dependencies.pth").write_text(
        "\n".join(dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])) + "\n"
    )
    run(python, "-c", "import setuptools, pip", cwd=base)  # --no-build-isolation builds with this venv's setuptools
    pip = (python, "-m", "pip", "--disable-pip-version-check", "--no-input")
    run(*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", base / "dist", sources, cwd=base)
    (wheel,) = (base / "dist").glob("warden-*.whl")
    run(*pip, "install", "--no-deps", "--no-index", wheel, cwd=base)
    return Install(venv, site_packages, wheel, sources)


def test_the_wheel_holds_every_package(install: Install) -> None:
    names = set(zipfile.ZipFile(install.wheel).namelist())
    for package in ("addons/masking/payloads", "addons/masking/recognizers", "addons/masking/operators",
                    "addons/store", "addons/auth", "addons/flow", "addons/rules", "addons/bodies", "scripts/warden"):
        assert f"{package}/__init__.py" in names, package
    modules = {p.relative_to(install.sources).as_posix() for name in ("addons", "scripts")
               for p in (install.sources / name).rglob("*.py")}
    assert modules - names == set()


def test_warden_runs_from_the_install(install: Install, tmp_path: Path) -> None:
    located = run(install.python, "-c", "import addons, addons.masking.payloads, scripts.warden.cli as c; "
                  "print(addons.__file__); print(addons.masking.payloads.__file__); print(c.__file__)", cwd=tmp_path)
    for path in located.stdout.split():
        assert Path(path).is_relative_to(install.site_packages), path

    shown = run(install.warden, "--help", cwd=tmp_path, env={"COLUMNS": "200"})
    for command in ("flows", "show", "export-flows", "verify", "repair-journal", "token", "rules"):
        assert f"\n  {command} " in shown.stdout, command
    checked = run(install.python, "-m", "scripts.warden", "rules", "check", ROOT / "rules" / "default.yaml",
                  cwd=tmp_path)
    assert "valid" in checked.stdout


def test_the_chain_loads_from_the_install(install: Install, confdir: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"):
        monkeypatch.delenv(name, raising=False)  # the gateway's environment: nothing of the checkout on its path
    chain = install.site_packages / "addons" / "gateway.py"
    gw = start_gateway(tmp_path / "gw", confdir, (ROOT / "rules" / "default.yaml").read_text(), upstream_port=9,
                       mitmdump=(str(install.python), "-c", RUN_MITMDUMP), chain=chain)
    try:
        # ready: the admin API answers, the store is open and the analyzer worker (python -m addons.masking.worker) runs
        assert httpx.get(f"{gw.admin_url}/healthz", trust_env=False).json()["status"] == "ok"
        refused = httpx.get("http://api.openai.com/v1/models", proxy=gw.proxy_url, trust_env=False, timeout=30)
        assert refused.status_code == 407 and refused.json()["error"]["type"] == "unauthenticated"
        found = run(install.warden, "--db", gw.db, "--admin", gw.admin, "flows", "--json", cwd=gw.workdir,
                    env={"WARDEN_ISSUER_KEY": str(gw.workdir / "warden-issuer.key"),
                         "WARDEN_RULES": str(gw.workdir / "rules.yaml")})
        flows = [json.loads(line) for line in found.stdout.splitlines()]
        assert [(f["host"], f["status"]) for f in flows] == [("api.openai.com", 407)]
    finally:
        gw.stop()
    assert gw.proc.returncode == 0, gw.log()
    assert "Traceback" not in gw.log(), gw.log()
