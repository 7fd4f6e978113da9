"""The Makefile alone sets up a machine that has Python, Java and Maven but no uv."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _python_with_pip() -> str:
    """A python3 outside this test's virtualenv (uv's venvs have no pip; a newcomer's has)."""
    venv_bin = str(Path(sys.prefix) / "bin")
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin)
    found = shutil.which("python3", path=path)
    assert found, "no python3 on PATH outside the virtualenv"
    # Through shims (pyenv) to the interpreter itself, which needs nothing else on PATH.
    where = "import sys; print(sys.executable)"
    return subprocess.run([found, "-c", where], capture_output=True, text=True).stdout.strip()


def _bare_path(tmp_path: Path) -> str:
    """A PATH holding python3 and nothing else, so `command -v uv` finds nothing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(_python_with_pip())
    return str(bin_dir)


def _make(*args: str, path: str) -> subprocess.CompletedProcess[str]:
    make = shutil.which("make")
    assert make
    env = {k: v for k, v in os.environ.items() if k not in ("UV", "VIRTUAL_ENV", "MAKEFLAGS")}
    env["PATH"] = path
    return subprocess.run(
        [make, "-C", str(ROOT), *args], env=env, capture_output=True, text=True, timeout=300
    )


class TestUvBootstrap:
    def test_install_plans_the_bootstrap_when_uv_is_not_on_path(self, tmp_path: Path) -> None:
        uv_dir = tmp_path / "uv"
        done = _make("-n", "install", f"UV_DIR={uv_dir}", path=_bare_path(tmp_path))
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        pip = next(i for i, line in enumerate(lines) if "-m pip install" in line)
        assert f"--target {uv_dir}" in lines[pip] and '"uv==' in lines[pip]
        sync = next(i for i, line in enumerate(lines) if line.endswith("sync --frozen"))
        assert lines[sync].startswith(f"{uv_dir}/bin/uv ") and pip < sync

    def test_install_uses_a_uv_found_on_path(self, tmp_path: Path) -> None:
        path = _bare_path(tmp_path)
        fake = Path(path) / "uv"
        fake.write_text("#!/bin/sh\nexit 0\n")
        fake.chmod(0o755)
        done = _make("-n", "install", f"UV_DIR={tmp_path / 'uv'}", path=path)
        assert done.returncode == 0, done.stderr
        assert "pip install" not in done.stdout
        assert f"{fake} sync --frozen" in done.stdout

    @pytest.mark.slow
    def test_bootstrap_installs_a_working_pinned_uv(self, tmp_path: Path) -> None:
        uv_dir = tmp_path / "uv"
        done = _make(f"{uv_dir}/bin/uv", f"UV_DIR={uv_dir}", path=_bare_path(tmp_path))
        assert done.returncode == 0, done.stdout + done.stderr
        version = subprocess.run(
            [str(uv_dir / "bin" / "uv"), "--version"], capture_output=True, text=True, check=True
        )
        pinned = next(
            line.split(":=")[1].strip()
            for line in (ROOT / "Makefile").read_text().splitlines()
            if line.startswith("UV_VERSION")
        )
        assert version.stdout.split()[1] == pinned
