"""Speed of mnad against a plain reference of the same model, side by side in one run; writes JSON.

    python benchmarks/speed.py                      # full run: about 10 minutes on an idle 2-core CPU
    python benchmarks/speed.py --quick              # seconds: tiny sizes and counts, for development (speed.quick.json)
    python benchmarks/speed.py --device cuda        # the same on a GPU
    python benchmarks/make_performance_doc.py       # then render docs/performance.md from the JSON

What it measures (all with ``--threads`` intra-op threads, 2 by default):

* scoring, batch 1, at each of ``--sizes``: frames/s of the whole test-time step (model, PSNR, feature distance D,
  weighted regular score E_t, gated memory update, reading the numbers back), for the reference
  (``benchmarks/reference_model.py``: fp32, NCHW, eager, no torch.no_grad, memory update as a loop over items) and
  for mnad's ``stream.StreamScorer``: fp32, the fast path (``eval.bf16`` + ``eval.channels_last``) and ONNX Runtime
  (``mnad.export``). Frames are synthetic uint8 arrays already in memory (decoding is not timed, for either side).
  The frames are scored one after the other, in order, each reading the memory the previous one left: nothing is
  batched, so the scores are exactly those of the published protocol.
* a training step at ``--train-size``, batch ``--batch``: the reference (fp32) against ``mnad.train.train_step``, the
  step ``mnad.train.train`` runs (bf16 autocast + channels_last, the same loss), in fp32, and with ``train.compile``
  (forward and backward compiled; the first, untimed step compiles: ``first_step_s``), on a fixed batch (data loading
  not timed).
* peak resident memory (VmHWM) of each configuration, each in its own fresh process; on CUDA also the peak
  GPU memory allocated.
* GFLOP per frame / per training step (counted with FlopCounterMode: convolutions and matrix products), the
  achieved GFLOP/s, and the machine's matrix-multiply peak (a large torch.matmul, fp32 and bf16).
* checks that the comparison is apples to apples: the reference and mnad (fp32) loaded with the same weights give
  the same PSNR, D, E_t, memory update and training loss on the same input; the fast path's and ONNX's PSNR differences.
  The memory update is judged on the reference's own queries (``update_check``): the end-to-end items are reported with
  the number of queries near a tie between two items, which rounding of the queries may assign to the other one.
* optionally (``--auc-checkpoint``, ``--auc-data-root``), the micro AUC of a trained model on a real test set,
  scored in fp32 and with the fast path (this scores the whole test set twice: minutes to tens of minutes).

The configurations (the rows) and the default settings are data: ``benchmarks/configs.toml``.

Every configuration runs in a fresh subprocess (``--worker``), so peaks and thread pools do not mix. Timings are
medians over the timed iterations after warm-up (and over ``--rounds``, which repeat every configuration,
interleaved, to even out drift in the machine's load).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUT = HERE / "results" / "speed.json"
SCHEMA = "mnad-speed-1"


@dataclass(frozen=True)
class Row:
    """One configuration of benchmarks/configs.toml: what a row of the results runs."""

    engine: str  # "reference", "mnad" or "onnx"
    description: str
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False  # eval.compile when scoring, train.compile when training
    target: bool = False  # the targets are checked for this row


CONFIGS = tomllib.loads((HERE / "configs.toml").read_text(encoding="utf-8"))
SCORE_CONFIGS = {name: Row(**spec) for name, spec in CONFIGS["score"].items()}
TRAIN_CONFIGS = {name: Row(**spec) for name, spec in CONFIGS["train"].items()}
SETTINGS = {"full": CONFIGS["settings"]["full"], "quick": CONFIGS["settings"]["full"] | CONFIGS["settings"]["quick"]}


# ---- helpers used by the workers ------------------------------------------------------------------------------


def write_results(path: str | Path, result: dict, *, indent: int = 2) -> Path:
    """A benchmark's JSON results, written atomically (an interrupted run leaves the previous file whole)."""
    from mnad.atomic import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, (json.dumps(result, indent=indent) + "\n").encode())
    return path


def results_path(out: str | Path | None, committed: Path, quick: bool) -> Path:
    """Where a benchmark writes: ``--out`` where given; else its committed file, or for a ``--quick`` run (whose numbers
    mean nothing) beside it as ``<stem>.quick.json``: a quick run never replaces a committed result by default."""
    if out is not None:
        return Path(out)
    return committed.with_name(f"{committed.stem}.quick.json") if quick else committed


def failed_path(path: str | Path) -> Path:
    """Where a run that failed in part writes its results: beside ``path`` as ``<stem>.failed.json``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.failed.json")


def finish(script: str, path: str | Path, result: dict, failures: list[str], *, indent: int = 2) -> int:
    """Write a benchmark run's results and return its exit status: the one rule of every benchmark with rows.

    A run without failures writes ``path`` and returns 0. A run with any (an errored row or worker, a failed check:
    ``failures`` names each, one line apiece) did not do what was asked: its results, with ``failures``, go beside
    ``path`` as ``<stem>.failed.json``, ``path`` (a committed result, perhaps) is left as it was, one
    ``<script>: error:`` line says so, and the status is 1."""
    path = Path(path)
    if not failures:
        write_results(path, result, indent=indent)
        print(f"wrote {path}", file=sys.stderr)
        return 0
    written = write_results(failed_path(path), result | {"failures": failures}, indent=indent)
    print(f"{script}: error: {len(failures)} part(s) of the run failed ({'; '.join(failures)}); its results are in {written}, "
          f"{path} is left as it was", file=sys.stderr)
    return 1


def peak_rss_mib() -> float:
    """VmHWM of this process (the peak resident set size), in MiB."""
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def synthetic_frames(n: int, size: int, seed: int = 0):
    """``n`` uint8 (size, size, 3) frames: a smooth background, a square moving across it, mild noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    background = (96 + 64 * np.sin(x / size * 6.28) * np.cos(y / size * 3.14)).astype(np.float32)
    frames = []
    side = max(size // 8, 2)
    for t in range(n):
        frame = background.copy()
        left = (t * max(size // 32, 1)) % (size - side)
        frame[size // 2: size // 2 + side, left: left + side] = 220.0
        frame = frame + rng.normal(0, 2, frame.shape)
        frames.append(np.repeat(np.clip(frame, 0, 255).astype(np.uint8)[..., None], 3, axis=2))
    return frames


def setup_torch(job: dict):
    import torch

    torch.set_num_threads(job["threads"])
    if job["device"].startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    return torch


def sync(torch, device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def mnad_config(job: dict, size: int, *, bf16: bool = False, channels_last: bool = False, compile_unet: bool = False,
                compile_train: bool = False):
    """The job's model at ``size``; a row's settings both for scoring (eval.*) and for training (train.*, whose lr and
    loss weights are mnad's defaults, the reference's too); ``compile_unet`` is eval.compile, ``compile_train`` train.compile."""
    from mnad.config import Config

    model = dict(job["model"], image_size=size)
    fast = {"bf16": bf16, "channels_last": channels_last}
    return Config.from_dict({"model": model, "eval": dict(fast, gamma=job["gamma"], compile=compile_unet),
                             "train": dict(fast, compile=compile_train)})


def load_weights(job: dict):
    from safetensors.torch import load_file

    return load_file(job["weights"])


def build_mnad(job: dict, config):
    from mnad.model import MNAD

    model = MNAD(config.model)
    model.load_state_dict(load_weights(job))
    return model.to(job["device"]).eval()


def build_reference(job: dict):
    sys.path.insert(0, str(HERE))
    import reference_model as ref

    model = ref.ConvAE(n_channel=job["model"]["channels"], t_length=job["model"]["t_length"])
    items = ref.load_mnad_state(model, load_weights(job))
    return ref, model.to(job["device"]), items.to(job["device"])


ITEMS_TOL = 1e-4  # max abs difference of memory items (unit vectors) that counts as rounding
TIE_MARGIN = 1e-5  # a query whose two nearest items' scores lie this close is a near tie: rounding may flip its item


def record_updates(ref_model) -> list[tuple]:
    """Wrap the reference's memory update (on this instance) so that each call records (queries, items before, items
    after), the very tensors the reference updated from: mnad's update can then be judged on the same queries."""
    memory = ref_model.memory
    update = memory.update
    calls: list[tuple] = []

    def recorded(query, items):
        new = update(query, items)
        calls.append((query.detach().clone(), items.detach().clone(), new.detach().clone()))
        return new

    memory.update = recorded
    return calls


def tied_items(queries, items, margin: float = TIE_MARGIN):
    """The queries (N,) whose two highest item scores lie within ``margin`` (float rounding of the queries may flip
    which item they update), and a mask of the items (M,) that such a query may update: every item within ``margin``
    of its highest score (two, or more where several items are all but parallel)."""
    from mnad.model.memory import item_scores

    scores = item_scores(queries, items).reshape(-1, items.shape[-2])
    close = scores >= scores.amax(dim=-1, keepdim=True) - margin  # (N, M): the items each query may update
    tied = close.sum(dim=-1) > 1
    return tied, close[tied].any(dim=0)


def near_ties(queries, items, margin: float = TIE_MARGIN) -> int:
    """How many queries have their two highest item scores within ``margin``: those whose nearest item (so the item they
    update) float rounding of the queries may flip, moving the updated items by far more than rounding."""
    return int(tied_items(queries, items, margin)[0].sum())


def update_check(queries, items, items_ref, items_mnad, *, reference, max_over: str = "all", update=None,
                 tol: float = ITEMS_TOL, margin: float = TIE_MARGIN) -> dict:
    """Judge mnad's memory update against the reference's as a function on the same input: ``update``
    (``mnad.model.memory.updated_memory`` by default) and ``reference`` (the reference's ``Memory.update``), both applied
    to the reference's own ``queries`` and ``items`` in float64, must agree within ``tol``. (float64: in float32 the two
    could still assign a query whose nearest items score within ~1e-7 differently, the reference taking the argmax of a
    softmax and mnad that of the scores.)

    The end-to-end difference (``items_mnad``, mnad's items after its own step, whose queries differ from the
    reference's by rounding, against ``items_ref``, the reference's) is reported beside it with the number of near ties:
    one tied query assigned to the other item moves those two items by far more than rounding. So the end-to-end
    comparison is held to ``tol`` on the items no near-tied query may update (all of them when there is no tie); it
    catches a step that updates from other queries, or not at all, unless every item the reference's step moved is one
    a tied query may update: then ``end_to_end_judged`` is False and only the same-queries comparison stands."""
    if update is None:
        from mnad.model.memory import updated_memory as update
    q64, items64 = queries.double(), items.double()
    same = float((update(q64, items64, max_over=max_over) - reference(q64, items64)).abs().max())
    end = float((items_mnad - items_ref).abs().max())
    tied, touched = tied_items(queries, items, margin)
    untouched = ~touched
    end_untied = float((items_mnad - items_ref)[untouched].abs().max()) if untouched.any() else 0.0
    moved = (items_ref - items).abs().amax(dim=-1) > tol  # the items the reference's step moved
    judged = bool((moved & untouched).any()) or not moved.any()
    return {"items_max_abs_diff_same_queries": same, "items_max_abs_diff": end, "near_ties": int(tied.sum()),
            "items_max_abs_diff_untied": end_untied, "end_to_end_judged": judged,
            "ok": bool(same <= tol and end_untied <= tol)}


# ---- workers: each runs in its own process and returns a dict -------------------------------------------------


def work_score(job: dict) -> dict:
    """Time the scoring of ``warmup + frames`` frames at batch 1 with one configuration."""
    torch = setup_torch(job)
    size, device = job["size"], job["device"]
    row = SCORE_CONFIGS[job["config"]]
    t_length = job["model"]["t_length"]
    frames = synthetic_frames(job["warmup"] + job["frames"] + t_length - 1, size)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    psnrs, updates = [], 0
    if row.engine == "reference":
        from collections import deque

        ref, model, items = build_reference(job)
        model.eval()
        window: deque = deque(maxlen=t_length)
        stamps = [(time.perf_counter(), time.process_time())]
        for frame in frames:
            window.append(frame)
            if len(window) < t_length:
                continue
            clip = ref.frames_to_tensor(list(window)).to(device)
            p, _, _, updated, items = ref.score_frame(model, clip, items, gamma=job["gamma"])
            psnrs.append(p)
            updates += int(updated)
            stamps.append((time.perf_counter(), time.process_time()))
    else:
        from mnad.stream import StreamScorer

        if row.engine == "onnx":
            from mnad.export import load_onnx

            model = load_onnx(job["onnx"], threads=job["threads"])
            config = model.config
        else:
            config = mnad_config(job, size, bf16=row.bf16, channels_last=row.channels_last, compile_unet=row.compile)
            model = build_mnad(job, config)
        # per-video normalisation: no per-frame S_t, only the raw terms (PSNR, D, E_t), as the published protocol scores
        scorer = StreamScorer.for_model(model, config, normalization="video", device=device)
        stamps = [(time.perf_counter(), time.process_time())]
        for frame in frames:
            scored = scorer.push(frame)
            if scored is None:  # the first clip's window filling
                continue
            psnrs.append(scored.psnr)
            updates += int(scored.updated)
            stamps.append((time.perf_counter(), time.process_time()))
    times = [b[0] - a[0] for a, b in zip(stamps, stamps[1:], strict=False)][job["warmup"]:]
    cpu = [b[1] - a[1] for a, b in zip(stamps, stamps[1:], strict=False)][job["warmup"]:]
    out = {"times_s": times, "cpu_s": cpu, "updates": updates, "frames_scored": len(psnrs), "mean_psnr": statistics.fmean(psnrs),
           "peak_rss_mib": peak_rss_mib()}
    if device.startswith("cuda"):
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def work_train(job: dict) -> dict:
    """Time ``warmup + steps`` training steps at batch ``batch`` with one configuration."""
    torch = setup_torch(job)
    size, device, batch = job["size"], job["device"], job["batch"]
    row = TRAIN_CONFIGS[job["config"]]
    config = mnad_config(job, size, bf16=row.bf16, channels_last=row.channels_last, compile_train=row.compile)
    clip = train_batch(job, batch, size)  # (B, T, C, H, W) on the host
    if device.startswith("cuda"):
        clip = clip.pin_memory()
        torch.cuda.reset_peak_memory_stats()
    times, cpu, losses = [], [], []
    if row.engine == "reference":
        ref, model, items = build_reference(job)
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
        flat = clip.flatten(1, 2)
        for _ in range(job["warmup"] + job["steps"]):
            start, start_cpu = time.perf_counter(), time.process_time()
            loss, items = ref.train_step(model, optimizer, flat.to(device), items, config.train.lambda_compact,
                                         config.train.lambda_separate)  # .item() syncs
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
            losses.append(loss)
    else:
        from mnad.train import prepared_for_training, train_step

        model = prepared_for_training(build_mnad(job, config), config.train)  # as train() prepares the model
        optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
        for _ in range(job["warmup"] + job["steps"]):
            start, start_cpu = time.perf_counter(), time.process_time()
            step_losses = train_step(model, optimizer, clip.to(device, non_blocking=True), config.train)  # train()'s step
            losses.append(step_losses.as_floats()["total"])  # syncs, as train.py's logging does
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    # the first step includes compiling (train.compile): its time says how long that took
    out = {"times_s": times[job["warmup"]:], "cpu_s": cpu[job["warmup"]:], "losses": losses, "peak_rss_mib": peak_rss_mib(),
           "first_step_s": times[0]}
    if device.startswith("cuda"):
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def train_batch(job: dict, batch: int, size: int):
    """A fixed batch of ``batch`` clips of t_length synthetic frames, (B, T, C, H, W) in [-1, 1]."""
    import numpy as np
    import torch

    t_length = job["model"]["t_length"]
    frames = synthetic_frames(batch + t_length - 1, size, seed=1)
    clips = np.stack([np.stack(frames[i:i + t_length]) for i in range(batch)])  # (B, T, H, W, C)
    return torch.from_numpy(clips).permute(0, 1, 4, 2, 3).float().div(127.5).sub(1.0).contiguous()


def work_matmul(job: dict) -> dict:
    """GFLOP/s of a large square torch.matmul, fp32 and bf16: the practical peak of this machine."""
    torch = setup_torch(job)
    n, device, out = job["n"], job["device"], {"n": job["n"]}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        times = []
        for i in range(job["warmup"] + job["iters"]):
            sync(torch, device)
            start = time.perf_counter()
            torch.matmul(a, b)
            sync(torch, device)
            if i >= job["warmup"]:
                times.append(time.perf_counter() - start)
        flop = 2 * n**3
        out[name] = {"gflops_median": flop / statistics.median(times) / 1e9, "gflops_best": flop / min(times) / 1e9, "times_s": times}
    return out


def work_flops(job: dict) -> dict:
    """GFLOP per scored frame (ScoringStep, batch 1) at each size and per training step (train_step), counted by
    FlopCounterMode on the steps themselves (benchmarks/flops.py): convolutions and matrix products."""
    sys.path.insert(0, str(HERE))
    from flops import score_gflop_per_frame, train_gflop_per_step

    out: dict = {"counted": "convolutions and matrix products (FlopCounterMode), multiply-add = 2 FLOP"}
    out["score_gflop_per_frame"] = {str(size): score_gflop_per_frame(mnad_config(job, size)) for size in job["sizes"]}
    size, batch = job["train_size"], job["batch"]
    out["train_gflop_per_step"] = train_gflop_per_step(mnad_config(job, size), batch)
    out["train_size"], out["train_batch"] = size, batch
    return out


def work_export(job: dict) -> dict:
    """Export the fp32 scoring step to ONNX at one size."""
    setup_torch(job)
    from mnad.export import export_onnx

    config = mnad_config(job, job["size"])
    model = build_mnad(dict(job, device="cpu"), config)
    start = time.perf_counter()
    export_onnx(model, config, job["onnx"])
    return {"seconds": time.perf_counter() - start}


def work_check(job: dict) -> dict:
    """Apples to apples: the reference and mnad, with the same weights, on the same input."""
    torch = setup_torch(job)
    import numpy as np

    from mnad.stream import scoring_step
    from mnad.train import train_step

    device = job["device"]
    out: dict = {"score": {}, "tolerance_psnr_db": job["tol_psnr"], "tolerance_loss_rel": job["tol_loss"]}
    t_length = job["model"]["t_length"]
    ok = True
    for size in job["sizes"]:
        ref, ref_model, items = build_reference(job)
        ref_model.eval()
        frames = synthetic_frames(t_length, size, seed=2)
        clip = ref.frames_to_tensor(frames).to(device)
        ref_updates = record_updates(ref_model)
        p_ref, d_ref, e_ref, _, items_ref = ref.score_frame(ref_model, clip, items.clone(), gamma=job["gamma"])
        row = {"psnr_reference": p_ref, "distance_reference": d_ref, "regular_reference": e_ref}
        mnad_items = {}
        n_in = job["model"]["channels"] * (t_length - 1)
        for name, bf16, cl in (("mnad_fp32", False, False), ("mnad_fast", True, True)):
            config = mnad_config(job, size, bf16=bf16, channels_last=cl)
            model = build_mnad(job, config)
            step = scoring_step(model, config)
            with torch.inference_mode():
                result = step(clip[:, :n_in], clip[:, n_in:], items.clone())
            row[f"psnr_{name}"] = float(result.psnr[0])
            row[f"distance_{name}"] = float(result.distance[0])
            row[f"regular_{name}"] = float(result.regular[0])
            row[f"items_max_abs_diff_{name}"] = float((result.items - items_ref).abs().max())
            mnad_items[name] = result.items
        if job.get("onnx", {}).get(str(size)):
            from mnad.export import load_onnx

            step = load_onnx(job["onnx"][str(size)], threads=job["threads"]).step
            result = step(clip[:, :n_in].cpu(), clip[:, n_in:].cpu(), items.cpu().clone())
            row["psnr_onnx"] = float(result.psnr[0])
            row["items_max_abs_diff_onnx"] = float((result.items - items_ref.cpu()).abs().max())
        row["psnr_abs_diff_fp32"] = abs(row["psnr_mnad_fp32"] - p_ref)
        row["psnr_abs_diff_fast"] = abs(row["psnr_mnad_fast"] - p_ref)
        # the test-time update (when E_t < gamma) as the training one: the same function on the reference's queries;
        # the end-to-end difference (items_max_abs_diff_mnad_fp32) is held to the tolerance on the items no near-tied
        # query may update (items_max_abs_diff_untied)
        if ref_updates:
            queries, before, after = ref_updates[0]
            update = update_check(queries, before, after, mnad_items["mnad_fp32"], reference=ref.Memory().update,
                                  max_over=config.model.update_max_over)
            row["items_max_abs_diff_same_queries"] = update["items_max_abs_diff_same_queries"]
            row["near_ties"] = update["near_ties"]
            row["items_max_abs_diff_untied"] = update["items_max_abs_diff_untied"]
            row["end_to_end_judged"] = update["end_to_end_judged"]
            items_ok = update["ok"]
        else:  # no update on the reference's side: mnad's items must be those it started from
            items_ok = row["items_max_abs_diff_mnad_fp32"] <= ITEMS_TOL
        row["same_function"] = bool(
            row["psnr_abs_diff_fp32"] <= job["tol_psnr"]
            and abs(row["distance_mnad_fp32"] - d_ref) <= 1e-5 * max(abs(d_ref), 1e-6) + 1e-7
            and abs(row["regular_mnad_fp32"] - e_ref) <= 1e-5 * max(abs(e_ref), 1e-6) + 1e-7
            and items_ok
        )
        if "psnr_onnx" in row:
            row["psnr_abs_diff_onnx"] = abs(row["psnr_onnx"] - p_ref)
            row["same_function"] &= bool(row["psnr_abs_diff_onnx"] <= job["tol_psnr"])
        ok &= row["same_function"]
        out["score"][str(size)] = row

    # the training loss of one step, train-mode BatchNorm, same batch and weights (fp32 on both sides)
    size, batch = job["check_train_size"], job["check_train_batch"]
    clip5 = train_batch(job, batch, size).to(device)
    ref, ref_model, items = build_reference(job)
    ref_model.train()
    flat = clip5.flatten(1, 2)
    n_in = job["model"]["channels"] * (t_length - 1)
    config = mnad_config(job, size)
    lc, ls = config.train.lambda_compact, config.train.lambda_separate
    ref_updates = record_updates(ref_model)
    outputs, _, items_ref, compact, separate = ref_model(flat[:, :n_in], items.clone(), True)
    loss_ref = float(torch.mean((outputs - flat[:, n_in:]) ** 2) + lc * compact + ls * separate)
    model = build_mnad(job, config).train()
    # the timed step itself: its losses are those before the Adam step, its memory update reads the same queries
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    loss_mnad = float(train_step(model, optimizer, clip5, config.train).total)
    rel = abs(loss_mnad - loss_ref) / max(abs(loss_ref), 1e-12)
    # the memory update judged as a function on the reference's own queries; the end-to-end items difference beside it,
    # with the near ties that can make it exceed rounding (the items start nearly parallel: at 256x256, batch 2, one
    # query's two nearest items can score within 1e-6, and the queries' rounding flips its item)
    queries, before, after = ref_updates[0]
    update = update_check(queries, before, after, model.memory.items, reference=ref.Memory().update,
                          max_over=config.model.update_max_over)
    train_ok = bool(rel <= job["tol_loss"] and update["ok"])
    out["train"] = {"size": size, "batch": batch, "loss_reference": loss_ref, "loss_mnad_fp32": loss_mnad, "rel_diff": rel,
                    "items_max_abs_diff": update["items_max_abs_diff"],
                    "items_max_abs_diff_same_queries": update["items_max_abs_diff_same_queries"],
                    "near_ties": update["near_ties"], "items_max_abs_diff_untied": update["items_max_abs_diff_untied"],
                    "end_to_end_judged": update["end_to_end_judged"], "queries": int(queries.shape[0]),
                    "same_function": train_ok}
    out["tie_margin"] = TIE_MARGIN
    out["tolerance_items"] = ITEMS_TOL
    out["ok"] = bool(ok and train_ok)
    out["torch"] = torch.__version__
    out["numpy"] = np.__version__
    return out


def work_auc(job: dict) -> dict:
    """Score a real test set with a trained model (fp32, or the fast path) through mnad.evaluate.evaluate."""
    setup_torch(job)
    import csv

    from mnad.checkpoint import load_model
    from mnad.evaluate import evaluate

    model, config = load_model(job["checkpoint"])
    fast, compiled = job["path"] in ("fast", "compiled"), job["path"] == "compiled"
    config = config.override([f"eval.bf16={str(fast).lower()}", f"eval.channels_last={str(fast).lower()}",
                              f"eval.compile={str(compiled).lower()}"])
    start = time.perf_counter()
    metrics = evaluate(model, config, job["data_root"], labels_path=job.get("labels"), out_dir=job["out_dir"],
                       device=job["device"], progress=False)
    seconds = time.perf_counter() - start
    with open(Path(job["out_dir"]) / "scores.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return {"micro_auc": metrics["micro_auc"], "macro_auc": metrics["macro_auc"], "frames_scored": metrics["frames_scored"],
            "memory_updates": metrics["memory_updates"], "seconds": seconds, "psnr": [float(r["psnr"]) for r in rows],
            "updated": [int(r["memory_updated"]) for r in rows], "image_size": config.model.image_size,
            "peak_rss_mib": peak_rss_mib()}


WORKERS = {"score": work_score, "train": work_train, "matmul": work_matmul, "flops": work_flops, "export": work_export,
           "check": work_check, "auc": work_auc}


def run_worker(job: dict, threads: int) -> dict:
    """Run one job in a fresh Python process; its result is the last stdout line."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONPATH=_pythonpath())
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)],
                          capture_output=True, text=True, env=env, cwd=str(ROOT))
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-5:]
        print(f"    worker {job['kind']} failed:\n      " + "\n      ".join(tail), file=sys.stderr)
        return {"error": "\n".join(tail) or f"exit status {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _pythonpath() -> str:
    parts = [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]
    return os.pathsep.join(p for p in parts if p)


# ---- the parent: machine, orchestration, aggregation -----------------------------------------------------------


CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")  # what the paths use


def machine_info(device: str) -> dict:
    import torch

    info: dict = {"cpu_model": "unknown", "logical_cpus": os.cpu_count(), "python": platform.python_version(),
                  "platform": platform.platform(), "torch": torch.__version__,
                  "torch_mkldnn": torch.backends.mkldnn.is_available()}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8")
        for line in cpuinfo.splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
        info["cpu_flags"] = [f for f in CPU_FEATURES if f in flags]
        mem_kib = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines() if line.startswith("MemTotal")))
        info["memory_gib"] = round(mem_kib / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        pass
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    info["cuda_available"] = torch.cuda.is_available()
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    return info


def command_line(script: str | Path, argv: list[str] | None) -> str:
    """How a benchmark was run, for its JSON: ``python <script relative to the repo> <arguments>``."""
    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(script, ROOT), *(argv if argv is not None else sys.argv[1:])])


def result_head(schema: str, script: str | Path, argv: list[str] | None, *, quick: bool | None,
                device: str | None = "cpu") -> dict:
    """The keys every benchmark's JSON starts with, in this order: ``schema``, ``created`` (now, UTC, to the second),
    ``command`` (``command_line(script, argv)``), ``quick`` and ``machine`` (``machine_info(device)``).

    ``quick=None`` leaves ``quick`` out (a benchmark without a quick mode); ``device=None`` leaves ``machine`` out (a
    benchmark that records its machine its own way, or none). A benchmark adds the rest with ``result_head(...) | {...}``.
    """
    head: dict = {"schema": schema, "created": datetime.now(UTC).isoformat(timespec="seconds"),
                  "command": command_line(script, argv)}
    if quick is not None:
        head["quick"] = quick
    if device is not None:
        head["machine"] = machine_info(device)
    return head


def start_timing(threads: int) -> tuple[float, float | None]:
    """The start of a timed benchmark: torch on ``threads`` threads; returns (``time.perf_counter()`` now, the cores
    other processes keep busy (``busy_cores``)), and warns on stderr when more than 0.2 of a core was busy."""
    import torch

    torch.set_num_threads(threads)
    started, busy = time.perf_counter(), busy_cores()
    if busy is not None and busy > 0.2:
        print(f"  WARNING: {busy:.2f} cores busy: the machine is not idle", file=sys.stderr)
    return started, busy


def busy_cores(seconds: float = 2.0) -> float | None:
    """Cores kept busy by other processes, measured over ``seconds`` from /proc/stat (the load average lags by minutes)."""
    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text(encoding="utf-8").splitlines()[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return (os.cpu_count() or 1) * (1 - (idle1 - idle0) / max(total1 - total0, 1))


def loadavg() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text(encoding="utf-8").split()[:3]]
    except OSError:
        return None


def prepare_weights(args: argparse.Namespace, path: Path) -> tuple[dict, str]:
    """Save the weights every worker loads; returns (model config, where the weights come from)."""
    import dataclasses

    import torch
    from safetensors.torch import save_file

    from mnad.config import Config
    from mnad.model import MNAD

    if args.checkpoint:
        from mnad.checkpoint import load_model

        model, config = load_model(args.checkpoint)
        source = f"checkpoint {args.checkpoint}"
    else:
        config = Config()  # the paper's prediction model: 4 + 1 frames, width 64, 10 items of 512
        torch.manual_seed(args.seed)
        model = MNAD(config.model)
        source = f"random initialisation (seed {args.seed})"
    m = config.model
    if (m.task, m.memory, m.width, m.memory_size, m.update_max_over, m.channels, m.t_length) != ("pred", True, 64, 10, "all", 3, 5):
        sys.exit("speed.py: the reference is the paper's prediction model (task pred, 3 channels, t_length 5, memory of 10 "
                 f"items, width 64, update max over all); the checkpoint has {m}")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return dataclasses.asdict(m), source


def summarize(times: list[list[float]]) -> dict:
    """Per-round medians -> the median over rounds; all timed iterations kept."""
    flat = [t for r in times for t in r]
    per_round = [statistics.median(r) for r in times if r]
    med = statistics.median(per_round)
    return {"median_s": med, "min_s": min(flat), "max_s": max(flat), "timed_iterations": len(flat),
            "round_medians_s": per_round}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Options left out take benchmarks/configs.toml's settings.full (settings.quick with --quick).")
    p.add_argument("--quick", action="store_true", help="tiny sizes and iteration counts (seconds; for development, not for numbers)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (and ONNX Runtime's), default 2")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--sizes", type=int, nargs="+", help="frame sizes for scoring")
    p.add_argument("--frames", type=int, help="timed frames per scoring configuration")
    p.add_argument("--warmup", type=int, help="untimed frames / steps before timing")
    p.add_argument("--train-size", type=int, help="frame size of the training step")
    p.add_argument("--batch", type=int, help="training batch")
    p.add_argument("--train-steps", type=int, help="timed training steps per configuration")
    p.add_argument("--rounds", type=int, help="repeat every configuration, interleaved, and take the median of the rounds")
    p.add_argument("--score-configs", help=f"comma-separated, from {', '.join(SCORE_CONFIGS)}")
    p.add_argument("--train-configs", help=f"comma-separated, from {', '.join(TRAIN_CONFIGS)}; empty to skip training")
    p.add_argument("--gamma", type=float, default=2.0,
                   help="test-time update threshold; the default 2.0 (E_t is at most 1) updates the memory after every frame, "
                        "the costliest case; 0.01 is the published value")
    p.add_argument("--checkpoint", help="take the weights of this trained mnad model (pred, with memory) instead of a random init")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--matmul-n", type=int, help="matrix size for the matmul peak")
    p.add_argument("--auc-checkpoint", help="also score a real test set with this trained model, fp32 and fast path, and compare the AUCs")
    p.add_argument("--auc-data-root", help="data root holding the test set of that model's dataset (e.g. /work/shared/data)")
    p.add_argument("--auc-labels", help="label file, if it is not found under the data root")
    p.add_argument("--out", help=f"JSON to write (default {DEFAULT_OUT.relative_to(ROOT)}; with --quick speed.quick.json beside it)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.out = results_path(args.out, DEFAULT_OUT, args.quick)
    d = SETTINGS["quick" if args.quick else "full"]
    args.sizes = args.sizes or d["sizes"]
    args.frames = args.frames or d["frames"]
    args.train_size = args.train_size or d["train_size"]
    args.batch = args.batch or d["batch"]
    args.train_steps = args.train_steps or d["train_steps"]
    args.rounds = args.rounds or d["rounds"]
    args.score_warmup = max(args.warmup if args.warmup is not None else d["score_warmup"], 1)
    args.train_warmup = max(args.warmup if args.warmup is not None else d["train_warmup"], 1)
    args.matmul_n = args.matmul_n or d["matmul_n_cuda" if args.device.startswith("cuda") else "matmul_n"]
    args.score_list = list(d["score_configs"]) if args.score_configs is None else [c for c in args.score_configs.split(",") if c]
    args.train_list = list(d["train_configs"]) if args.train_configs is None else [c for c in args.train_configs.split(",") if c]
    for name in args.score_list:
        if name not in SCORE_CONFIGS:
            p.error(f"unknown scoring configuration {name!r}")
    for name in args.train_list:
        if name not in TRAIN_CONFIGS:
            p.error(f"unknown training configuration {name!r}")
    if bool(args.auc_checkpoint) != bool(args.auc_data_root):
        p.error("--auc-checkpoint and --auc-data-root go together")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        job = json.loads(args.worker)
        print(json.dumps(WORKERS[job["kind"]](job)))
        return 0
    started = time.perf_counter()
    notes: list[str] = []
    cuda = args.device.startswith("cuda")
    machine = machine_info(args.device)
    if cuda and not machine["cuda_available"]:
        sys.exit("speed.py: --device cuda but torch sees no GPU")
    load_start, busy = loadavg(), busy_cores()
    if busy is not None and busy > 0.2:
        notes.append(f"WARNING: the machine was not idle at the start ({busy:.2f} cores busy with other processes): they shared "
                     "the cores, so these timings and ratios are unreliable.")
        print(f"  WARNING: {busy:.2f} cores busy: the machine is not idle", file=sys.stderr)
    onnx_ok = machine["onnxruntime"] is not None and not cuda
    if "onnx" in args.score_list and not onnx_ok:
        args.score_list.remove("onnx")
        notes.append("ONNX Runtime row skipped: " + ("mnad's OnnxStep runs on the CPU provider only" if cuda else "onnxruntime is not installed"))
    if not cuda:
        notes.append("No GPU was used in this run (--device cpu); `--device cuda` runs the same code on a GPU.")

    tmp = Path(tempfile.mkdtemp(prefix="mnad-speed-"))  # weights, ONNX files and AUC scores of this run
    try:
        return benchmark(args, argv, tmp, machine, notes, load_start, busy, started)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def benchmark(args: argparse.Namespace, argv: list[str] | None, tmp: Path, machine: dict, notes: list[str],
              load_start: list[float] | None, busy: float | None, started: float) -> int:
    cuda = args.device.startswith("cuda")
    weights = tmp / "weights.safetensors"
    model_cfg, source = prepare_weights(args, weights)
    base = {"threads": args.threads, "device": args.device, "weights": str(weights), "model": model_cfg, "gamma": args.gamma}
    print(f"speed.py: {machine['cpu_model']}, {args.threads} threads, device {args.device}; weights: {source}", file=sys.stderr)

    print(f"  matmul peak (n={args.matmul_n})", file=sys.stderr)
    peak = run_worker(dict(base, kind="matmul", n=args.matmul_n, warmup=1, iters=2 if args.quick else 5), args.threads)
    print("  counting FLOPs", file=sys.stderr)
    flops = run_worker(dict(base, kind="flops", sizes=args.sizes, train_size=args.train_size, batch=args.batch), args.threads)

    onnx_paths: dict[str, str] = {}
    exports: dict[str, dict] = {}
    if "onnx" in args.score_list:
        for size in args.sizes:
            print(f"  exporting ONNX at {size}x{size}", file=sys.stderr)
            path = tmp / f"mnad_{size}.onnx"
            exports[str(size)] = run_worker(dict(base, kind="export", size=size, onnx=str(path)), args.threads)
            if "error" not in exports[str(size)]:
                onnx_paths[str(size)] = str(path)

    print("  checking that the reference and mnad compute the same function", file=sys.stderr)
    check_size = min(args.sizes)
    checks = run_worker(dict(base, kind="check", sizes=args.sizes, onnx=onnx_paths, tol_psnr=1e-3, tol_loss=1e-4,
                             check_train_size=check_size, check_train_batch=2), args.threads)
    if not checks.get("ok", False):
        notes.append("WARNING: the equivalence check failed: see `checks`; the speed ratios may not compare like with like.")
        print("  WARNING: the equivalence check failed", file=sys.stderr)

    score_times: dict[tuple[int, str], list[list[float]]] = {}
    score_runs: dict[tuple[int, str], list[dict]] = {}
    train_times: dict[str, list[list[float]]] = {}
    train_runs: dict[str, list[dict]] = {}
    for r in range(args.rounds):
        for size in args.sizes:
            for name in args.score_list:
                if name == "onnx" and str(size) not in onnx_paths:
                    continue
                print(f"  round {r + 1}/{args.rounds}: scoring {size}x{size} {name}", file=sys.stderr)
                job = dict(base, kind="score", config=name, size=size, frames=args.frames, warmup=args.score_warmup,
                           onnx=onnx_paths.get(str(size)))
                res = run_worker(job, args.threads)
                score_runs.setdefault((size, name), []).append(res)
                if "error" not in res:
                    score_times.setdefault((size, name), []).append(res["times_s"])
        for name in args.train_list:
            print(f"  round {r + 1}/{args.rounds}: training step {args.train_size}x{args.train_size} batch {args.batch} {name}",
                  file=sys.stderr)
            job = dict(base, kind="train", config=name, size=args.train_size, batch=args.batch, steps=args.train_steps,
                       warmup=args.train_warmup)
            res = run_worker(job, args.threads)
            train_runs.setdefault(name, []).append(res)
            if "error" not in res:
                train_times.setdefault(name, []).append(res["times_s"])

    peak_fp32 = peak.get("fp32", {}).get("gflops_median")
    peak_bf16 = peak.get("bf16", {}).get("gflops_median")
    scoring = []
    for size in args.sizes:
        gflop = flops.get("score_gflop_per_frame", {}).get(str(size))
        ref_time = summarize(score_times[(size, "reference")])["median_s"] if (size, "reference") in score_times else None
        for name in args.score_list:
            runs = score_runs.get((size, name), [])
            spec = SCORE_CONFIGS[name]
            row: dict = {"config": name, "size": size, "description": spec.description, "bf16": spec.bf16,
                         "channels_last": spec.channels_last, "compile": spec.compile}
            if (size, name) not in score_times:
                row["error"] = next((x["error"] for x in runs if "error" in x), "not run")
                scoring.append(row)
                continue
            stats = summarize(score_times[(size, name)])
            ok_runs = [x for x in runs if "error" not in x]
            if len(ok_runs) < len(runs):  # a round that errored: the row stands on the others, the run failed in part
                row["rounds_failed"] = len(runs) - len(ok_runs)
            row.update(stats)
            row["fps"] = 1 / stats["median_s"]
            row["ms_per_frame"] = 1000 * stats["median_s"]
            row["speedup_vs_reference"] = ref_time / stats["median_s"] if ref_time else None
            row["peak_rss_mib"] = max(x["peak_rss_mib"] for x in ok_runs)
            if cuda:
                row["cuda_peak_mib"] = max(x.get("cuda_peak_mib", 0.0) for x in ok_runs)
            row["cpu_s_per_frame"] = statistics.median([c for x in ok_runs for c in x["cpu_s"]])  # process CPU time, all threads
            row["memory_updates"] = sum(x["updates"] for x in ok_runs)
            row["frames_scored"] = sum(x["frames_scored"] for x in ok_runs)
            if gflop:
                row["gflop_per_frame"] = gflop
                row["achieved_gflops"] = gflop * row["fps"]
                ref_peak = peak_bf16 if row["bf16"] else peak_fp32
                row["peak_used"] = "bf16" if row["bf16"] else "fp32"
                row["fraction_of_peak"] = row["achieved_gflops"] / ref_peak if ref_peak else None
            scoring.append(row)

    training = []
    train_gflop = flops.get("train_gflop_per_step")
    ref_train = summarize(train_times["reference"])["median_s"] if "reference" in train_times else None
    for name in args.train_list:
        runs = train_runs.get(name, [])
        spec = TRAIN_CONFIGS[name]
        row = {"config": name, "size": args.train_size, "batch": args.batch, "description": spec.description,
               "bf16": spec.bf16, "channels_last": spec.channels_last, "compile": spec.compile}
        if name not in train_times:
            row["error"] = next((x["error"] for x in runs if "error" in x), "not run")
            training.append(row)
            continue
        stats = summarize(train_times[name])
        ok_runs = [x for x in runs if "error" not in x]
        if len(ok_runs) < len(runs):
            row["rounds_failed"] = len(runs) - len(ok_runs)
        row.update(stats)
        row["s_per_step"] = stats["median_s"]
        row["frames_per_s"] = args.batch / stats["median_s"]
        row["speedup_vs_reference"] = ref_train / stats["median_s"] if ref_train else None
        row["peak_rss_mib"] = max(x["peak_rss_mib"] for x in ok_runs)
        row["first_loss"] = ok_runs[0]["losses"][0]
        row["first_step_s"] = max(x["first_step_s"] for x in ok_runs)  # with train.compile: compiling included
        row["cpu_s_per_step"] = statistics.median([c for x in ok_runs for c in x["cpu_s"]])  # process CPU time, all threads
        if cuda:
            row["cuda_peak_mib"] = max(x.get("cuda_peak_mib", 0.0) for x in ok_runs)
        if train_gflop:
            row["gflop_per_step"] = train_gflop
            row["achieved_gflops"] = train_gflop / stats["median_s"]
            ref_peak = peak_bf16 if row["bf16"] else peak_fp32
            row["peak_used"] = "bf16" if row["bf16"] else "fp32"
            row["fraction_of_peak"] = row["achieved_gflops"] / ref_peak if ref_peak else None
        training.append(row)

    accuracy = run_accuracy(args, base, tmp) if args.auc_checkpoint else None
    result = result_head(SCHEMA, __file__, argv, quick=args.quick, device=None) | {
        "machine": machine,  # machine_info(args.device), read at the start
        "loadavg_start": load_start,
        "busy_cores_start": busy,
        "loadavg_end": loadavg(),
        "settings": {"threads": args.threads, "device": args.device, "sizes": args.sizes, "frames_timed": args.frames,
                     "score_warmup": args.score_warmup, "train_size": args.train_size, "batch": args.batch,
                     "train_steps_timed": args.train_steps, "train_warmup": args.train_warmup, "rounds": args.rounds,
                     "gamma": args.gamma, "weights": source, "matmul_n": args.matmul_n},
        "peak": peak,
        "flops": flops,
        "limits": limits(flops, peak_bf16, peak_fp32),
        "checks": checks,
        "onnx_export": exports,
        "scoring": scoring,
        "training": training,
        "targets": targets(scoring, training, flops, peak_bf16),
        "accuracy": accuracy,
        "notes": notes + NOTES,
        "seconds": time.perf_counter() - started,
    }
    print_summary(result)
    print(f"{result['seconds']:.0f} s", file=sys.stderr)
    return finish("speed.py", args.out, result, failures(result))


def failures(result: dict) -> list[str]:
    """What of a speed run failed: a worker that errored (matmul peak, FLOP count, ONNX export, a row, an AUC path) or
    the equivalence check."""
    out = [what for what, part in (("the matmul peak", result["peak"]), ("the FLOP count", result["flops"])) if "error" in part]
    out += [f"the ONNX export at {size}" for size, part in result["onnx_export"].items() if "error" in part]
    if not result["checks"].get("ok", False):
        out.append("the equivalence check")
    out += [f"scoring {r['config']} at {r['size']}" for r in result["scoring"] if "error" in r or r.get("rounds_failed")]
    out += [f"training {r['config']}" for r in result["training"] if "error" in r or r.get("rounds_failed")]
    out += [f"the AUC of the {name} path" for name, part in ((result["accuracy"] or {}).get("paths") or {}).items() if "error" in part]
    return out


NOTES = [
    "Scoring is batch 1 and strictly in order: frame t+1 reads the memory that frame t's gated update left, exactly as "
    "in the published protocol. Nothing is batched, so no score changes.",
    "Frames are uint8 arrays already decoded and resized, in memory, for every configuration: decoding is not timed "
    "(mnad decodes and resizes each frame once). No worker processes: one process per configuration, `--threads` threads.",
    "Time per frame covers the whole step: building the input from the last frames, the network, PSNR, D, E_t, the "
    "memory update and reading the numbers back to Python.",
    "A training step is timed on a fixed batch already in memory (no data loading), forward + losses + backward + "
    "Adam + memory update.",
    "GFLOP are counted by FlopCounterMode (convolutions and matrix products; a multiply-add is 2 FLOP). Achieved GFLOP/s "
    "compare with the matmul peak of the same precision (bf16 rows with the bf16 peak).",
]


def limits(flops: dict, peak_bf16: float | None, peak_fp32: float | None) -> dict:
    """The frames/s the measured matmul peak allows at each size (GFLOP per frame / peak)."""
    out = {}
    for size, gflop in flops.get("score_gflop_per_frame", {}).items():
        out[size] = {"fps_limit_fp32": peak_fp32 / gflop if peak_fp32 else None,
                     "fps_limit_bf16": peak_bf16 / gflop if peak_bf16 else None}
    return out


def targets(scoring: list[dict], training: list[dict], flops: dict, peak_bf16: float | None) -> list[dict]:
    """The issue's targets, evaluated on this run (the 256x256 ones only where 256 was measured)."""
    rows = []
    for r in sorted(scoring, key=lambda r: -r["size"]):  # each configuration the targets are about, largest size first
        if not SCORE_CONFIGS[r["config"]].target or "error" in r:
            continue
        size, name = r["size"], r["config"]
        if r.get("speedup_vs_reference") is not None:
            rows.append({"target": f"scoring {size}x{size} batch 1: >= 2.4x the reference ({name})", "value": r["speedup_vs_reference"],
                         "unit": "x", "threshold": 2.4, "met": r["speedup_vs_reference"] >= 2.4, "config": name})
        gflop = flops.get("score_gflop_per_frame", {}).get(str(size))
        if gflop and peak_bf16:
            limit = peak_bf16 / gflop
            rows.append({"target": f"scoring {size}x{size}: >= 90 % of the bf16 limit ({limit:.2f} frames/s) ({name})",
                         "value": r["fps"] / limit, "unit": "fraction", "threshold": 0.9, "met": r["fps"] / limit >= 0.9, "config": name})
        rows.append({"target": f"peak memory while scoring {size}x{size}: <= 0.6 GiB ({name})", "value": r["peak_rss_mib"] / 1024,
                     "unit": "GiB", "threshold": 0.6, "met": r["peak_rss_mib"] / 1024 <= 0.6, "config": name})
    t = next((r for r in training if TRAIN_CONFIGS[r["config"]].target and r.get("speedup_vs_reference") is not None), None)
    if t:
        rows.append({"target": f"training step {t['size']}x{t['size']} batch {t['batch']}: >= 2.8x the reference",
                     "value": t["speedup_vs_reference"], "unit": "x", "threshold": 2.8, "met": t["speedup_vs_reference"] >= 2.8})
    return rows


ACCURACY_PATHS = ("fp32", "fast", "compiled")  # fp32 first: the others are compared with it


def run_accuracy(args: argparse.Namespace, base: dict, tmp: Path) -> dict:
    """Micro AUC of a trained model on a real test set, fp32 against the fast paths, and how far the per-frame PSNR moved."""
    out: dict = {"checkpoint": args.auc_checkpoint, "data_root": args.auc_data_root, "paths": {}}
    for name in ACCURACY_PATHS:
        print(f"  AUC: scoring the test set ({name})", file=sys.stderr)
        job = dict(base, kind="auc", path=name, checkpoint=args.auc_checkpoint, data_root=args.auc_data_root,
                   labels=args.auc_labels, out_dir=str(tmp / f"auc_{name}"))
        out["paths"][name] = run_worker(job, args.threads)
    exact = out["paths"]["fp32"]
    for name in ACCURACY_PATHS[1:]:
        other = out["paths"][name]
        if "error" in exact or "error" in other:
            continue
        diffs = [abs(x - y) for x, y in zip(exact["psnr"], other["psnr"], strict=True)]
        other["psnr_max_abs_diff_db"] = max(diffs)
        other["psnr_mean_abs_diff_db"] = statistics.fmean(diffs)
        other["update_decisions_differing"] = sum(x != y for x, y in zip(exact["updated"], other["updated"], strict=True))
        if exact["micro_auc"] is not None and other["micro_auc"] is not None:
            other["micro_auc_diff_points"] = 100 * (other["micro_auc"] - exact["micro_auc"])
            other["within_0.3_points"] = abs(other["micro_auc_diff_points"]) <= 0.3
    for side in out["paths"].values():
        if "error" not in side:
            side["fps_end_to_end"] = side["frames_scored"] / side["seconds"]
            del side["psnr"], side["updated"]
    return out


def print_summary(result: dict) -> None:
    print(f"\nscoring (batch 1, {result['settings']['threads']} threads, device {result['settings']['device']})")
    for r in result["scoring"]:
        if "error" in r:
            print(f"  {r['size']:>4} {r['config']:<10} ERROR {r['error'].splitlines()[-1]}")
            continue
        speed = f"{r['speedup_vs_reference']:.2f}x" if r.get("speedup_vs_reference") else "-"
        frac = f"{100 * r['fraction_of_peak']:.0f}% of {r['peak_used']} peak" if r.get("fraction_of_peak") else ""
        print(f"  {r['size']:>4} {r['config']:<10} {r['fps']:7.2f} frames/s  {speed:>6}  {r['peak_rss_mib']:6.0f} MiB  {frac}")
    for r in result["training"]:
        if "error" in r:
            print(f"  train {r['config']:<10} ERROR {r['error'].splitlines()[-1]}")
            continue
        speed = f"{r['speedup_vs_reference']:.2f}x" if r.get("speedup_vs_reference") else "-"
        print(f"  train {r['size']} b{r['batch']} {r['config']:<10} {r['s_per_step']:7.2f} s/step  {speed:>6}")
    for t in result["targets"]:
        print(f"  [{'met' if t['met'] else 'NOT met'}] {t['target']}: {t['value']:.3g}")
    print(f"  checks: {'ok' if result['checks'].get('ok') else 'FAILED'}")


if __name__ == "__main__":
    raise SystemExit(main())
