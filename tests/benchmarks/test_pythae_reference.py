"""benchmarks/pythae_reference.py runs in pythae's own environment, outside this repository's
dependencies: here only its command line is checked (parsing happens before pythae is imported)."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "pythae_reference.py"


def test_help_runs_without_pythae_and_names_the_setup_and_the_models():
    p = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "pip install pythae==0.1.2" in p.stdout
    for model in ("vae", "iwae", "iaf", "infovae", "svae"):
        assert model in p.stdout


def test_an_unknown_model_is_refused_before_pythae_is_needed():
    p = subprocess.run([sys.executable, str(SCRIPT), "--model", "vamp"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "invalid choice: 'vamp'" in p.stderr
