"""mnad's text files are UTF-8 whatever the machine's locale: every file it writes or reads as text names its encoding.

A file opened without one takes the locale's (cp1252 on Windows, ASCII or Latin-1 on some servers), so a source or
video name outside ASCII made outputs that mnad's own readers, which read UTF-8, could not read back (events.csv was
written in the locale's encoding and mended on resume as UTF-8). Python says so (``EncodingWarning``) under
``-X warn_default_encoding``: the main commands run end to end in a subprocess with that warning an error wherever
mnad's code opens a file. ``ruff``'s PLW1514 (pyproject.toml) catches what it can see statically; this catches the
rest (``Path.open``, ``read_text`` on values whose type ruff cannot tell).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import sys, warnings
import os, sysconfig, traceback
import mnad

# Each EncodingWarning is traced to the innermost frame outside the standard library (Path.open's and read_text's
# are raised in pathlib, not where they were called): mnad's code is a finding; a library's own open (torch's,
# OpenCV's, matplotlib's) is not mnad's to fix.
STDLIB, MNAD = sysconfig.get_paths()["stdlib"], os.path.dirname(mnad.__file__)
found = []

def show(message, category, filename, lineno, file=None, line=None):
    if not issubclass(category, EncodingWarning):
        return
    for frame in reversed(traceback.extract_stack()[:-1]):
        if frame.filename.startswith(STDLIB) or frame.filename.startswith("<"):
            continue
        if frame.filename.startswith(MNAD):
            found.append(f"{frame.filename}:{frame.lineno}: {frame.line}")
        return

warnings.simplefilter("always", EncodingWarning)
warnings.showwarning = show
from mnad.cli import main
from mnad.data.synthetic import make_synthetic_dataset

tmp = sys.argv[1]
root = tmp + "/données"  # a path outside ASCII: it reaches the outputs (sources, videos, commands)
make_synthetic_dataset(root, n_train=2, n_test=2, n_frames=24, size=32, seed=0)
tiny = ["--set", "model.image_size=32", "--set", "model.width=8", "--set", "train.bf16=false",
        "--set", "train.channels_last=false", "--threads", "1", "--quiet"]
run = tmp + "/run"
steps = [
    ["train", "--recipe", "synthetic_pred", "--data-root", root, "--out", run, "--epochs", "1", *tiny],
    ["train", "--recipe", "synthetic_pred", "--data-root", root, "--out", run, "--epochs", "1", "--resume", *tiny],
    ["evaluate", "--checkpoint", run, "--data-root", root, "--out", tmp + "/eval", "--quiet"],
    ["report", tmp + "/eval"],
    ["calibrate", "--checkpoint", run, "--data", root + "/synthetic/training/frames/01",
     root + "/synthetic/training/frames/02", "--out", tmp + "/cal.safetensors", "--false-alarm-rate", "0.05", "--quiet"],
    ["evaluate", "--checkpoint", tmp + "/cal.safetensors", "--data-root", root, "--protocol", "stream",
     "--out", tmp + "/stream", "--quiet"],
    ["detect", root + "/synthetic/testing/frames/01", "--checkpoint", tmp + "/cal.safetensors", "--out", tmp + "/d",
     "--save-maps", "png", "--save-video", "--quiet"],
    ["detect", root + "/synthetic/testing/frames/01", "--checkpoint", tmp + "/cal.safetensors", "--out", tmp + "/d",
     "--resume", "--quiet"],
    ["export", "--checkpoint", tmp + "/cal.safetensors", "--out", tmp + "/m.onnx"],
    ["detect", root + "/synthetic/testing/frames/02", "--checkpoint", tmp + "/m.onnx", "--out", tmp + "/o", "--quiet"],
]
for step in steps:
    code = main(step)
    if code != 0:
        sys.exit(f"mnad {step[0]} exited {code}")
if found:
    sys.exit("text opened without an encoding:\n" + "\n".join(sorted(set(found))))
print("done")
"""


def test_the_main_commands_name_the_encoding_of_every_text_file_they_open(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-X", "warn_default_encoding", "-c", SCRIPT, str(tmp_path)],
                            capture_output=True, text=True, encoding="utf-8", timeout=600)
    assert result.returncode == 0 and result.stdout.strip().endswith("done"), result.stderr[-3000:]
    summary = json.loads((tmp_path / "d" / "summary.json").read_text(encoding="utf-8"))
    assert "données" in json.dumps(summary, ensure_ascii=False)  # the name outside ASCII did reach the outputs
