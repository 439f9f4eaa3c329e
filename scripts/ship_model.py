"""Write a trained model as the package's shipped fp16 model (loadable by name, e.g. `--checkpoint ped2-pred`).

    python scripts/ship_model.py --checkpoint runs/ped2_pred_fast --name ped2-pred

The weights and memory items are stored in float16 (half the size); they are loaded back as float32. Evaluate the
shipped file itself (`mnad evaluate --checkpoint ped2-pred ...`) to get the AUC it reproduces.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from mnad.checkpoint import PRETRAINED, load_model, save_model, tensor_digest

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--name", default="ped2-pred", choices=sorted(PRETRAINED))
    args = parser.parse_args()
    model, config = load_model(args.checkpoint)
    path = ROOT / "src" / "mnad" / "pretrained" / PRETRAINED[args.name]
    save_model(path, model, config, dtype=torch.float16, extra={"source": str(args.checkpoint)})
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    print(f"{path}: {path.stat().st_size / 2**20:.1f} MiB, tensors sha256 {tensor_digest(state)}")


if __name__ == "__main__":
    main()
