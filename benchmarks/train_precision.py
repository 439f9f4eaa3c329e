"""How far a bf16 training step is from fp32's, part by part; writes results/train_precision.json.

    python benchmarks/train_precision.py --data-root ../shared/data        # tens of minutes where bf16 is emulated

One training step (``mnad.train.train_step``: forward, the loss of Eq. 8, backward, Adam, the memory update) from the
same weights on the same batch of Ped2 training clips, once per numeric setting. Each setting's gradients, losses and
updated memory items are set against the fp32 (NCHW) step's: the cosine of each part's gradient and its relative
error, per stage of the U-Net. Two rows give the scale: ``fp32-cl`` (fp32, channels_last: other convolution kernels,
the same maths) is the floor that float rounding alone gives; ``fp32-other-batch`` (the fp32 step on the previous
batch) is how far a step's gradient is moved anyway by the batch it happens to see.

The bf16 settings: the recipes' autocast + channels_last; the same with parts kept in fp32 (autocast off there): the
last convolution, which makes the frame, the whole output head, or the encoder's two deepest stages; and the same
with the memory read in bf16, as mnad ran it before 2026-11-30 (the committed bf16 runs trained so; mnad reads in
fp32 now). The variants are made here, for the measurement, by wrapping the named parts; the package's training runs
none of them.

Two starting points: the shipped model's weights (trained) and the recipe's random initialisation (seed 0). bf16 runs
as the CPU does it: natively with AVX512-BF16 or AMX, emulated (slowly, with the same rounding) elsewhere; the JSON
records which. No speed is measured.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import sys
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "train_precision.json"
SCHEMA = "mnad-train-precision-1"

sys.path.insert(0, str(HERE))
from int8 import cpu_info  # noqa: E402  (the same CPU record as int8.py)
from speed import result_head, write_results  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Setting:
    bf16: bool
    channels_last: bool
    bf16_read: bool = False  # the memory read under autocast (in bf16), as mnad ran it before 2026-11-30
    fp32_modules: tuple[str, ...] = ()  # submodules run outside autocast, on fp32 inputs


SETTINGS = {
    "fp32": Setting(bf16=False, channels_last=False),  # the reference
    "fp32-cl": Setting(bf16=False, channels_last=True),
    "bf16-cl": Setting(bf16=True, channels_last=True),  # the recipes
    "bf16-cl-read16": Setting(bf16=True, channels_last=True, bf16_read=True),  # how the committed bf16 runs trained
    "bf16-cl-lastconv": Setting(bf16=True, channels_last=True, fp32_modules=("decoder.head.6",)),  # the frame's conv
    "bf16-cl-head": Setting(bf16=True, channels_last=True, fp32_modules=("decoder.head",)),
    "bf16-cl-stage34": Setting(bf16=True, channels_last=True, fp32_modules=("encoder.stage3", "encoder.stage4")),
}
OTHER_BATCH = "fp32-other-batch"  # not a setting: the fp32 step on the previous batch, set against this batch's

# the parts whose gradients are compared, in the order of the forward pass
PARTS = ["encoder.stage1", "encoder.stage2", "encoder.stage3", "encoder.stage4", "decoder.bottleneck", "decoder.up4",
         "decoder.stage3", "decoder.up3", "decoder.stage2", "decoder.up2", "decoder.head"]


@contextlib.contextmanager
def numeric_variant(model, setting: Setting) -> Iterator[None]:
    """``setting``'s departures from the package's numerics, for the duration: the named parts of ``model`` outside
    autocast (instance attributes, removed after), the memory read inside it."""
    import torch

    import mnad.model.mnad as mnad_model

    def in_fp32(forward):
        def run(*args):
            with torch.autocast(args[0].device.type, enabled=False):
                return forward(*(a.float() if torch.is_tensor(a) else a for a in args))
        return run

    wrapped = [model.get_submodule(name) for name in setting.fp32_modules]
    for module in wrapped:
        module.forward = in_fp32(module.forward)
    keep_fp32 = mnad_model.outside_autocast
    if setting.bf16_read:
        mnad_model.outside_autocast = lambda device_type: contextlib.nullcontext()
    try:
        yield
    finally:
        mnad_model.outside_autocast = keep_fp32
        for module in wrapped:
            del module.forward


def one_step(base, config, clip, setting: Setting) -> dict:
    """``train_step`` on a copy of ``base`` under ``setting``; the copy's gradients, losses and new memory items."""
    import torch

    from mnad.train import prepared_for_training, train_step

    cfg = dataclasses.replace(config.train, bf16=setting.bf16, channels_last=setting.channels_last, compile=False)
    model = prepared_for_training(copy.deepcopy(base), cfg)  # as train() prepares the model
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    with numeric_variant(model, setting):
        losses = train_step(model, optimizer, clip, cfg)
    grads = {name: torch.cat([p.grad.float().flatten() for p in model.get_submodule(name).parameters()]) for name in PARTS}
    return {"losses": losses.as_floats(), "grads": grads, "items": model.memory.items.detach().float().clone()}


def compare(step: dict, ref: dict) -> dict:
    import torch
    import torch.nn.functional as F

    def parts(a: torch.Tensor, b: torch.Tensor) -> dict:
        a, b = a.double(), b.double()  # an fp32 cosine over millions of elements is off in the third digit
        return {"cosine": float(F.cosine_similarity(a, b, dim=0)), "relative_error": float((a - b).norm() / b.norm())}

    every = torch.cat([step["grads"][n] for n in PARTS]), torch.cat([ref["grads"][n] for n in PARTS])
    return {
        "losses": step["losses"],
        "loss_abs_diff": {k: abs(v - ref["losses"][k]) for k, v in step["losses"].items()},
        "grads": {name: parts(step["grads"][name], ref["grads"][name]) for name in PARTS} | {"all": parts(*every)},
        "items_max_abs_diff": float((step["items"] - ref["items"]).abs().max()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-root", required=True, help="folder holding ped2/training")
    p.add_argument("--checkpoint", default="ped2-pred", help="the trained weights (default: the shipped model)")
    p.add_argument("--batches", type=int, default=2, help="batches compared, spread over the training clips")
    p.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated, from: " + ", ".join(SETTINGS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    names = [s for s in args.settings.split(",") if s]
    unknown = sorted(set(names) - set(SETTINGS))
    if unknown or "fp32" not in names:
        p.error(f"--settings: unknown {', '.join(unknown)}" if unknown else "--settings must include fp32 (the reference)")

    import torch

    from mnad.checkpoint import load_model
    from mnad.data import ClipDataset, FrameStore, split_videos
    from mnad.model import MNAD
    from mnad.precision import bf16_is_native

    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    trained, config = load_model(args.checkpoint)
    torch.manual_seed(config.train.seed)  # as train() initialises a model
    starts = {"trained": trained, "init": MNAD(config.model)}
    store = FrameStore(split_videos(args.data_root, "ped2", "training"), config.model.image_size, config.model.channels)
    dataset = ClipDataset(store, config.model.t_length)
    b = config.train.batch_size
    picks = [round(i * (len(dataset) - 1) / (args.batches * b - 1)) for i in range(args.batches * b)]  # evenly spread
    batches = [torch.stack([dataset[i] for i in picks[k * b:(k + 1) * b]]) for k in range(args.batches)]

    runs = []
    for start, base in starts.items():
        previous = None
        for k, clip in enumerate(batches):
            steps = {}
            for name in names:
                print(f"{start} weights, batch {k + 1}/{len(batches)}: {name} ...", file=sys.stderr, flush=True)
                steps[name] = one_step(base, config, clip, SETTINGS[name])
            compared = {n: compare(steps[n], steps["fp32"]) for n in names if n != "fp32"}
            if previous is not None:  # the scale of what a step's gradient is anyway: another batch's, in fp32
                compared[OTHER_BATCH] = compare(previous, steps["fp32"])
            runs.append({"weights": start, "batch": k, "clips": picks[k * b:(k + 1) * b], "settings": compared})
            previous = steps["fp32"]

    summary = {}  # per weights and setting: the worst batch of each part
    for start in starts:
        for name in [n for n in names if n != "fp32"] + ([OTHER_BATCH] if len(batches) > 1 else []):
            rows = [r["settings"][name] for r in runs if r["weights"] == start and name in r["settings"]]
            summary.setdefault(start, {})[name] = {
                "grad_cosine_min": {part: min(r["grads"][part]["cosine"] for r in rows) for part in [*PARTS, "all"]},
                "grad_relative_error_max": {part: max(r["grads"][part]["relative_error"] for r in rows) for part in [*PARTS, "all"]},
                "loss_total_abs_diff_max": max(r["loss_abs_diff"]["total"] for r in rows),
                "items_max_abs_diff": max(r["items_max_abs_diff"] for r in rows),
            }
    result = result_head(SCHEMA, __file__, argv, quick=None, device=None) | {  # no quick mode
        "machine": cpu_info() | {"bf16_native": bf16_is_native("cpu"), "threads": args.threads},
        "model": {"checkpoint": args.checkpoint, "image_size": config.model.image_size, "batch": b},
        "settings": {n: dataclasses.asdict(SETTINGS[n]) for n in names},
        "parts": PARTS,
        "runs": runs,
        "summary": summary,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_results(args.out, result)
    for start, rows in summary.items():
        print(f"\n{start} weights: gradient cosine against fp32, worst of {len(batches)} batches")
        print("setting".ljust(18) + "".join(part.split(".")[-1][:10].rjust(11) for part in [*PARTS, "all"]))
        for name, row in rows.items():
            print(name.ljust(18) + "".join(f"{row['grad_cosine_min'][part]:11.5f}" for part in [*PARTS, "all"]))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
