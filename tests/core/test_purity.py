"""The core is sans-I/O: importing all of it pulls in neither aiohttp, redis nor asyncio, and no
third-party package but lxml and oauthlib."""

from __future__ import annotations

import subprocess
import sys

_SCRIPT = """
import importlib, pkgutil, sys
import gateway.core
names = [m.name for m in pkgutil.walk_packages(gateway.core.__path__, "gateway.core.")]
for name in names:
    importlib.import_module(name)
assert "gateway.core.policy" in names and "gateway.core.oauth1" in names, names
bad = sorted(m for m in ("aiohttp", "redis", "asyncio", "yaml") if m in sys.modules)
third_party = {n.split(".")[0] for n in sys.modules} - set(sys.stdlib_module_names)
allowed = {"gateway", "lxml", "oauthlib", "__main__"}
bad += sorted(n for n in third_party - allowed if not n.startswith("_") and n != "cython_runtime")
print(",".join(bad))
"""


def test_core_imports_no_io_libraries() -> None:
    out = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"gateway.core imported {out.stdout.strip()}"
