"""optimum-onnx's own virtual environment for the benchmarks that run it beside edgegen: it pins an
older transformers than edgegen's, so it lives at benchmarks/.venv-optimum, created on first use
(torch's CPU build, optimum-onnx with ONNX Runtime, and diffusers for its Stable Diffusion pipelines)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

VENV = Path(__file__).parent / ".venv-optimum"


def optimum_python(given: str | None = None) -> str:
    """A Python with optimum-onnx: `given`, or the benchmarks' own environment (made once)."""
    if given:
        return given
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {VENV} with optimum-onnx (once)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "torch==2.13.0", "optimum-onnx[onnxruntime]",
                        "diffusers"], check=True)
    return str(python)
