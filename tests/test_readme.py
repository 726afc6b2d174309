"""The README's two set-up commands are the ones CI runs."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _text(name):
    path = ROOT / name
    if not path.exists():
        pytest.skip(f"{name} not present (tests run from an installed copy)")
    return path.read_text()


def test_ci_runs_exactly_the_readme_test_command():
    ci_lines = [l.strip() for l in _text(".ci/run").splitlines() if l.strip() and not l.startswith("#")]
    test_command = ci_lines[-1]
    assert "pytest" in test_command
    assert test_command in _text("README.md")


def test_readme_shows_the_main_job():
    assert "pip install . && eplb place" in _text("README.md")
