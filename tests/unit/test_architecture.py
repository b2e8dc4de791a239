"""The layout rules: services share only `contracts` and `platform` (import-linter), and the pure
domain modules do no I/O."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "tinysaga"
IO_MODULES = {"asyncpg", "aiokafka", "httpx", "aiohttp", "fastapi", "socket", "subprocess", "aiosmtplib"}


def test_services_import_only_contracts_and_platform() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    r = subprocess.run([str(lint)], capture_output=True, text=True, cwd=SRC.parents[1])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "KEPT" in r.stdout


def test_domain_modules_are_pure() -> None:
    domains = sorted(SRC.glob("*/domain.py"))
    assert len(domains) >= 4
    for path in domains:
        tree = ast.parse(path.read_text())
        imported = {
            (n.module or "").split(".")[0] if isinstance(n, ast.ImportFrom) else a.name.split(".")[0]
            for n in ast.walk(tree)
            if isinstance(n, ast.Import | ast.ImportFrom)
            for a in (n.names if isinstance(n, ast.Import) else [n])
        }
        assert not imported & IO_MODULES, f"{path.relative_to(SRC)} imports {imported & IO_MODULES}"


def test_lint_is_clean() -> None:
    ruff = Path(sys.executable).with_name("ruff")
    r = subprocess.run(
        [str(ruff), "check", "src", "tests", "bench"], capture_output=True, text=True, cwd=SRC.parents[1]
    )
    assert r.returncode == 0, r.stdout + r.stderr
