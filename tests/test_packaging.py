"""The package as users get it: a wheel built from the sources, installed outside the clone.

The wheel is built from a copy of the files a clone has, installed into a new virtual
environment in a temporary directory, and run from another temporary directory: nothing of the
repository (nor the editable install of the test environment) is importable there. Only the
third-party dependencies come from the test environment (its site-packages directory is appended
to the new environment's path, without processing the ``.pth`` files there, so the editable
install stays inert): installing them from an index would make the test slow and need a network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.packaging, pytest.mark.slow]


def _run(
    argv: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def _copy_sources(dest: Path) -> None:
    """What a clone holds of the build: the project file, the README, the license, the package."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(
        ROOT / "etl", dest / "etl", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built (as `pip wheel`) from a copy of the sources."""
    base = tmp_path_factory.mktemp("build")
    _copy_sources(base / "src")
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(base / "dist"), "."],
        cwd=base / "src",
    )
    assert built.returncode == 0, built.stderr
    (found,) = (base / "dist").glob("partner_referrals_etl-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> tuple[Path, dict[str, str]]:
    """A virtual environment outside the repository with only the built wheel installed."""
    base = tmp_path_factory.mktemp("install")
    venv = base / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=base)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], base)
    deps = sysconfig.get_path("purelib")  # the test environment's third-party packages
    Path(site.stdout.strip(), "_test_dependencies.pth").write_text(deps + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REFERRALS_ETL_", "PYTHON"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"

    # Honest: before the wheel is installed, the new environment cannot import the project
    # (the dependencies' directory holds only the test environment's inert editable hook).
    before = _run([str(python), "-c", "import etl"], base, env)
    assert before.returncode != 0, before
    assert "No module named 'etl'" in before.stderr, before
    deps_ok = _run([str(python), "-c", "import sqlalchemy, alembic, httpx, click"], base, env)
    assert deps_ok.returncode == 0, deps_ok.stderr

    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q"]
    put = _run([*pip, str(wheel)], cwd=base)
    assert put.returncode == 0, put.stderr
    return venv, env


def test_the_wheel_ships_the_migrations(wheel: Path) -> None:
    """The wheel holds alembic's env.py, its template, the revisions and the py.typed marker."""
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"etl/migrations/env.py", "etl/migrations/script.py.mako"} <= names
    assert any(n.startswith("etl/migrations/versions/0001") for n in names)
    assert "etl/py.typed" in names


def test_the_installed_wheel_works_outside_the_repository(
    installed: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """Installed in a fresh environment, its command migrates a database and runs the demo."""
    venv, env = installed
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    python = str(venv / "bin" / "python")

    show = "import etl, sys; print(etl.__file__); print(*sys.path, sep='\\n')"
    where = _run([python, "-c", show], elsewhere, env)
    assert where.returncode == 0, where.stderr
    module, *path = where.stdout.splitlines()
    assert Path(module).resolve().is_relative_to(venv.resolve()), f"etl imported from {module}"
    assert str(ROOT) not in path, "the repository is on the new environment's path"

    etl = str(venv / "bin" / "referrals-etl")
    env = {**env, "REFERRALS_ETL_DATABASE_URL": f"sqlite:///{elsewhere / 'jobs.db'}"}
    upgrade = _run([etl, "db", "upgrade"], elsewhere, env)
    assert upgrade.returncode == 0, upgrade.stderr
    current = _run([etl, "db", "current"], elsewhere, env)
    assert current.returncode == 0, current.stderr
    assert "at head" in current.stdout

    demo = _run([etl, "demo", "--count", "20"], elsewhere, env)
    assert demo.returncode == 0, demo.stderr
    assert "second pass" in demo.stdout
    assert (elsewhere / "referrals-demo.db").is_file()
