"""The storage package stays light: importing it must not load torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
MODULES = [
    "audit", "batches", "db", "export", "files", "history", "jobs",
    "labels", "models", "registry", "retry", "review", "scores", "thresholds",
]  # fmt: skip


def test_storage_imports_without_torch():
    imports = "; ".join(f"import storage.{name}" for name in MODULES)
    check = f"import sys; {imports}; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", check], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
