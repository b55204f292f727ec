"""Paths and helpers shared by the dashboard tests.

A plain module rather than conftest.py, so test files can import it by name.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP_PATH = ROOT / "app.py"
