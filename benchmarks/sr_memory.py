"""Peak memory of one large upscale (docs/results.md, "Super-resolution"): the shipped x4 model exported,
then in a fresh process the pipeline loaded and warmed up on a small crop, then the held-out
coffee photograph enlarged to 1024x768 upscaled to 4096x3072 (the default tiles). Reported: the
process's peak resident memory during the upscale above its resident memory just before (Linux:
the peak is restarted through /proc/self/clear_refs), which is what the upscale itself costs
(ONNX Runtime's arena, the pipeline's buffers, Pillow's copy of the result).

    python benchmarks/sr_memory.py [--source CHECKOUT]

--source runs the upscale with the edgegen of another checkout (for example the code before a
change: git worktree add /tmp/before REV), on a package this checkout exports.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from edgegen.export import export_checkpoint
from edgegen.families import PRETRAINED

MEASURE = """
import sys
sys.path.insert(0, sys.argv[1])
import edgegen
from PIL import Image
from edgegen.families.sr.data import photo_split
pipe = edgegen.load(sys.argv[2], backend="ort-cpu")
photo = Image.fromarray(photo_split("natural", 0)[1][1]).resize((1024, 768), Image.BICUBIC)
pipe.upscale(photo.crop((0, 0, 64, 64)))

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith(field))

with open("/proc/self/clear_refs", "w") as f:
    f.write("5")        # Linux: the peak (VmHWM) restarts from the resident memory now
before = status("VmRSS:")
out = pipe.upscale(photo)
peak = status("VmHWM:")
print(f"{edgegen.__file__}: 1024x768 -> {out.width}x{out.height} {out.mode}: peak resident memory {peak:.0f} MB, "
      f"{peak - before:.0f} MB above the warmed-up pipeline ({out.width * out.height * 3 / 2**20:.0f} MB result)")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=str(Path(__file__).resolve().parents[1]),
                        help="the checkout whose edgegen runs the upscale (default: this one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        package = export_checkpoint(PRETRAINED / "sr-photos-x4", Path(scratch) / "sr")
        subprocess.run([sys.executable, "-c", MEASURE, args.source, str(package)], check=True)


if __name__ == "__main__":
    main()
