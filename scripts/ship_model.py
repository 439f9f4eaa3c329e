"""Write a trained model as one of the package's shipped fp16 models (loadable by name, e.g. `--checkpoint ped2-pred`).

    python scripts/ship_model.py --checkpoint runs/ped2_pred_fast --name ped2-pred

The weights and memory items are stored in float16 (half the size); they are loaded back as float32 (a calibrated
model's calibration, fitted on the float32 weights, then records the digest of the float16 ones: ``save_model``). The file is
loaded by name only once its metadata SHA-256, printed here, is pinned in `mnad.checkpoint.PRETRAINED` (a new name
gets an entry there: file, pin, recipe, how it was trained, its results folder). Every ship is pinned anew: the pin
covers the config and the --checkpoint recorded as the model's source, so the same weights shipped from another path
pin otherwise. Evaluate the shipped file itself (`mnad evaluate --checkpoint ped2-pred ...`) to get the AUC it
reproduces.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

from mnad.checkpoint import PRETRAINED, load_model, save_model
from mnad.safetensors_header import read_header

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--name", default="ped2-pred", help=f"the name it is loaded by (shipped now: {', '.join(PRETRAINED)})")
    args = parser.parse_args()
    if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", args.name):
        parser.error(f"--name {args.name!r}: lower-case letters and digits joined by '-' (as ped2-pred)")
    model, config = load_model(args.checkpoint)
    shipped = PRETRAINED.get(args.name)
    path = ROOT / "src" / "mnad" / "pretrained" / (shipped.file if shipped else f"{args.name}.safetensors")
    save_model(path, model, config, dtype=torch.float16, extra={"source": str(args.checkpoint)})
    pin = read_header(path)["__metadata__"]["meta_sha256"]
    print(f"{path}: {path.stat().st_size / 2**20:.1f} MiB, recipe {config.name}")
    if shipped is not None and shipped.meta_sha256 != pin:
        print(f"pin it in mnad.checkpoint.PRETRAINED[{args.name!r}]: meta_sha256={pin!r}")
    elif shipped is None:
        print(f"add to mnad.checkpoint.PRETRAINED:\n    {args.name!r}: ShippedModel(file={path.name!r}, meta_sha256={pin!r}, "
              f"recipe={config.name!r}, trained=..., results=...),")


if __name__ == "__main__":
    main()
