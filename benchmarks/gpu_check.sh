#!/usr/bin/env bash
# On a machine with an NVIDIA GPU, from the repository root, in the README's environment
# (plus onnxruntime-gpu and/or tensorrt + cuda-python for those paths):
#   benchmarks/gpu_check.sh [OUT.json]
# runs the `gpu`-marked tests, then the GPU benchmarks, and writes one JSON file with both.
set -u
out="${1:-gpu_check.json}"
tmp="$(mktemp -d)"
python -m pytest -m gpu -q -rs --junitxml="$tmp/gpu_tests.xml" > "$tmp/gpu_tests.txt" 2>&1
tests_rc=$?
python benchmarks/gpu.py --out "$tmp/bench.json"
bench_rc=$?
python - "$out" "$tmp" "$tests_rc" "$bench_rc" <<'PY'
import json, sys
from pathlib import Path
out, tmp, tests_rc, bench_rc = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
bench = json.loads((tmp / "bench.json").read_text()) if (tmp / "bench.json").exists() else None
report = {"gpu_tests": {"exit_status": tests_rc, "output": (tmp / "gpu_tests.txt").read_text()[-20000:]},
          "benchmarks": bench, "benchmarks_exit_status": bench_rc}
Path(out).write_text(json.dumps(report, indent=2) + "\n")
print(f"wrote {out}: gpu tests exit {tests_rc}, benchmarks exit {bench_rc}")
PY
