"""Write a trained model as one of the package's shipped fp16 models (loadable by name, e.g. `--checkpoint ped2-pred`).

    python scripts/ship_model.py --checkpoint runs/ped2_pred_fast --name ped2-pred

The weights and memory items are stored in float16 (half the size); they are loaded back as float32 (a calibrated
model's calibration, fitted on the float32 weights, then records the digest of the float16 ones: ``save_model``). The file is
loaded by name only once its metadata SHA-256, printed here, is pinned in `mnad.checkpoint.PRETRAINED` (a new name
gets an entry there: file, pin, recipe, how it was trained, its results folder). Every ship is pinned anew: the pin
covers the config and the --checkpoint recorded as the model's source, so the same weights shipped from another path
pin otherwise. Evaluate the shipped file itself (`mnad evaluate --checkpoint ped2-pred ...`) to get the AUC it
reproduces.

A shipped file that is there already is replaced only with --overwrite (the file is written whole, then renamed into
place: a failed ship leaves the previous one).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch

from mnad.checkpoint import PRETRAINED, load_model, save_model
from mnad.errors import MNADError
from mnad.safetensors_header import read_header

ROOT = Path(__file__).resolve().parents[1]
PRETRAINED_DIR = ROOT / "src" / "mnad" / "pretrained"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ship_model.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--name", default="ped2-pred", help=f"the name it is loaded by (shipped now: {', '.join(PRETRAINED)})")
    parser.add_argument("--overwrite", action="store_true", help="replace the shipped file of that name if there is one")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", args.name):
        parser.error(f"--name {args.name!r}: lower-case letters and digits joined by '-' (as ped2-pred)")
    shipped = PRETRAINED.get(args.name)
    path = PRETRAINED_DIR / (shipped.file if shipped else f"{args.name}.safetensors")
    if path.exists() and not args.overwrite:
        return fail(f"{path} is shipped already: --overwrite to replace it")
    try:
        model, config = load_model(args.checkpoint)
        save_model(path, model, config, dtype=torch.float16, extra={"source": str(args.checkpoint)})  # atomic
    except MNADError as exc:
        return fail(str(exc))
    pin = read_header(path)["__metadata__"]["meta_sha256"]
    print(f"{path}: {path.stat().st_size / 2**20:.1f} MiB, recipe {config.name}")
    if shipped is not None and shipped.meta_sha256 != pin:
        print(f"pin it in mnad.checkpoint.PRETRAINED[{args.name!r}]: meta_sha256={pin!r}")
    elif shipped is None:
        print(f"add to mnad.checkpoint.PRETRAINED:\n    {args.name!r}: ShippedModel(file={path.name!r}, meta_sha256={pin!r}, "
              f"recipe={config.name!r}, trained=..., results=...),")
    return 0


def fail(message: str) -> int:
    print(f"ship_model.py: error: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
