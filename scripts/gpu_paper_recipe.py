"""The paper's recipe (ped2_pred) on a GPU machine that has only this working tree: pack, unpack, 3 seeds, DDP, JSON.

On a machine with the data, pack Ped2's frames at the training size into gpu_pack/ (ignored by git; pass it to the
GPU machine with the working tree, e.g. the device tool's ``carry``):

    python scripts/gpu_paper_recipe.py pack --data ../shared/data/ped2          # -> gpu_pack/ped2_256/

On the GPU machine (no internet): one command, everything within 10 minutes, the JSON and one archive of the logs
(logs.tar.gz: each seed's output, training log, config and metrics, the DDP logs) in $OUT, two files (the device tool
brings at most 8 back):

    bash scripts/gpu_run.sh

which runs ``python scripts/gpu_paper_recipe.py run --pack gpu_pack/ped2_256 --out $OUT``: unpack the frames into the
dataset layout mnad reads, train ped2_pred for 3 seeds at once on the one GPU (as many epochs as the time budget
allows, estimated from a short timed run; the cosine schedule runs over those epochs; a checkpoint per epoch), score
each seed on the Ped2 test set (the published protocol), meanwhile check DDP under torchrun (NCCL; where NCCL
refuses two ranks on one GPU, gloo on that GPU), and write ``gpu_paper_recipe.json``.

The same end to end on a CPU in a minute, on any dataset in the standard layout (tests/test_gpu_script.py):

    python scripts/gpu_paper_recipe.py pack --data DIR/synthetic --size 32 --videos 2 --out /tmp/pack
    python scripts/gpu_paper_recipe.py run --pack /tmp/pack/synthetic_32 --device cpu --tiny --out /tmp/out

The pack: one video per clip folder, VP9 in WebM (OpenCV's FFmpeg), grayscale where a video's channels are equal
(Ped2: grey pictures stored as RGB), plus the labels of the packed test videos and a manifest. Ped2's 4,560 frames at
256x256 take 24 MiB, against 82 MiB as JPEG at quality 95 (too much: the working tree and the pack travel together in
the 64 MiB a transfer takes). ``pack`` measures this working tree (git's tracked and untracked-not-ignored files) and
refuses, exit status 1, a pack that does not fit beside it (an earlier pack is replaced only by one that fits). The
decoded frames are within 46.7 dB PSNR (worst video) of the frames mnad reads from the original JPEGs, a
root-mean-square error of 1.2 grey levels (the manifest records it per video). Unpacking checks each video's
frame count and mean against the manifest, so a decoder that reads the videos differently fails before training.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = "mnad-gpu-paper-recipe-1"
RESULT_FILE = "gpu_paper_recipe.json"
LOGS_FILE = "logs.tar.gz"  # every log, config and metrics file of the run: $OUT holds these two files alone (the device
# tool brings at most 8 files back from $OUT; 15 loose ones would lose some, the JSON among them)
TRANSFER_LIMIT = 64 * 2**20  # the working tree the GPU machine receives, pack included
CODECS = (("VP90", ".webm"), ("VP80", ".webm"), ("mp4v", ".avi"))  # the first one this OpenCV writes
MEAN_TOLERANCE = 1.0  # grey levels: a video's mean decoded here against the mean measured when it was packed
PAPER_MICRO_AUC = 0.970  # MNAD, prediction, UCSD Ped2 (Park et al., CVPR 2020, Table 1)


class PackError(Exception):
    """The pack is missing, incomplete, or decodes differently here than where it was made."""


# ---- pack and unpack -------------------------------------------------------------------------------------------


def read_video(path: Path, gray: bool) -> list:
    """Every frame of a packed video: uint8 (H, W) if ``gray``, else (H, W, 3) BGR."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    frames = []
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if gray else frame)
    finally:
        capture.release()
    return frames


def pack(data: Path, out: Path, size: int, videos: int | None = None, *, limit: int | None = None) -> Path:
    """Pack the training and test videos of the dataset folder ``data`` (standard layout), resized to ``size`` as
    mnad resizes them, into ``out/<dataset>_<size>/``; the first ``videos`` of each split only, if given.

    The pack is made in a temporary folder beside it and replaces an earlier one only once complete; with ``limit``
    (bytes), only if this working tree (``tree_bytes``) and the new pack fit in it together (else ``PackError``, the
    earlier pack kept)."""
    name = data.name
    dest = out / f"{name}_{size}"
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out, prefix=f".{dest.name}."))
    try:
        _pack_into(data, work, size, videos)
        if limit is not None:
            tree = tree_bytes()
            packed = json.loads((work / "manifest.json").read_text(encoding="utf-8"))["bytes"]
            if tree is not None and tree + packed > limit:
                raise PackError(f"this working tree ({tree / 2**20:.1f} MiB) and the pack ({packed / 2**20:.1f} MiB) come to "
                                f"{(tree + packed) / 2**20:.1f} MiB, over the {limit / 2**20:.3g} MiB a device transfer takes: "
                                f"the pack is not written ({dest} is unchanged); shrink the tree or pack fewer --videos")
        aside = None
        if dest.exists():
            aside = Path(tempfile.mkdtemp(dir=out, prefix=f".{dest.name}.old."))
            dest.rename(aside / dest.name)
        work.rename(dest)
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # gone already once renamed
    return dest


def _pack_into(data: Path, dest: Path, size: int, videos: int | None) -> None:
    import cv2
    import numpy as np

    from mnad.data import split_videos
    from mnad.data.labels import find_label_file, load_labels

    name = data.name
    splits = {split: split_videos(data.parent, name, split) for split in ("training", "testing")}  # not a dataset: refused first
    fourcc, ext = next(((c, e) for c, e in CODECS if _writer_works(c, e, size)), (None, None))
    if fourcc is None:
        raise PackError(f"this OpenCV writes none of {', '.join(c for c, _ in CODECS)}")
    manifest: dict = {"schema": "mnad-gpu-pack-1", "dataset": name, "size": size, "codec": fourcc, "ext": ext,
                      "source": str(data), "created": datetime.now(UTC).isoformat(timespec="seconds"), "videos": {}}
    all_test = splits["testing"]
    for split in ("training", "testing"):
        entries = []
        for video in splits[split][:videos]:
            frames = [video.frame(i, size, 3) for i in range(len(video))]  # exactly what mnad's FrameStore reads
            gray = all(np.array_equal(f[..., 0], f[..., 1]) and np.array_equal(f[..., 1], f[..., 2]) for f in frames)
            path = dest / split / f"{video.name}{ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (size, size), isColor=not gray)
            for frame in frames:
                writer.write(frame[..., 0] if gray else frame)
            writer.release()
            decoded = read_video(path, gray)
            if len(decoded) != len(frames):
                raise PackError(f"{path}: {len(decoded)} frames decoded of {len(frames)} written")
            source = np.stack([f[..., 0] if gray else f for f in frames]).astype(np.float64)
            mse = float(np.mean((source - np.stack(decoded)) ** 2))
            entries.append({"name": video.name, "frames": len(frames), "gray": gray, "mean": float(np.mean(np.stack(decoded))),
                            "psnr_db": 10 * math.log10(255**2 / mse) if mse > 0 else None, "bytes": path.stat().st_size})
        manifest["videos"][split] = entries
    label_path = find_label_file(data, name)
    if label_path is not None:  # the labels of the packed test videos only, as one row (.npy)
        per_video = load_labels(label_path, all_test)[: len(manifest["videos"]["testing"])]
        manifest["labels"] = f"frame_labels_{name}.npy"
        np.save(dest / manifest["labels"], np.concatenate(per_video)[None, :])
    manifest["bytes"] = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _writer_works(fourcc: str, ext: str, size: int) -> bool:
    import cv2

    with tempfile.TemporaryDirectory() as tmp:
        writer = cv2.VideoWriter(str(Path(tmp) / f"probe{ext}"), cv2.VideoWriter_fourcc(*fourcc), 10, (size, size), isColor=False)
        ok = writer.isOpened()
        writer.release()
    return ok


def tree_bytes() -> int | None:
    """What the GPU machine receives besides the pack: the files git tracks or would track in this working tree (None
    where git cannot say)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    files = [ROOT / name for name in listed.decode().split("\0") if name]
    return sum(p.stat().st_size for p in files if p.is_file())


def unpack(pack_dir: Path, root: Path) -> dict:
    """Decode the pack into ``root/<dataset>/{training,testing}/frames/<video>/NNNN.png`` and the label file."""
    from concurrent.futures import ThreadPoolExecutor

    import cv2

    started = time.perf_counter()
    manifest_path = pack_dir / "manifest.json"
    if not manifest_path.is_file():
        raise PackError(f"{pack_dir}: no manifest.json; make the pack with `python scripts/gpu_paper_recipe.py pack`")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    dataset = root / manifest["dataset"]

    def one(split: str, entry: dict) -> float:
        path = pack_dir / split / f"{entry['name']}{manifest['ext']}"
        if not path.is_file():
            raise PackError(f"{path}: missing from the pack")
        frames = read_video(path, entry["gray"])
        if len(frames) != entry["frames"]:
            raise PackError(f"{path}: {len(frames)} frames decoded here, {entry['frames']} packed (is this OpenCV's FFmpeg "
                            f"able to read {manifest['codec']}?)")
        import numpy as np

        diff = abs(float(np.mean(np.stack(frames))) - entry["mean"])
        if diff > MEAN_TOLERANCE:
            raise PackError(f"{path}: decodes to a mean of {entry['mean'] + diff:.2f} here against {entry['mean']:.2f} where "
                            "it was packed: this decoder reads the video differently")
        folder = dataset / split / "frames" / entry["name"]
        folder.mkdir(parents=True, exist_ok=True)
        for i, frame in enumerate(frames):
            cv2.imwrite(str(folder / f"{i:04d}.png"), frame, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        return diff

    jobs = [(split, entry) for split, entries in manifest["videos"].items() for entry in entries]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # OpenCV releases the GIL
        diffs = list(pool.map(lambda job: one(*job), jobs))
    if manifest.get("labels"):
        shutil.copy(pack_dir / manifest["labels"], dataset / manifest["labels"])
    return {"root": str(root), "dataset": manifest["dataset"], "size": manifest["size"], "codec": manifest["codec"],
            "videos": len(jobs), "frames": sum(e["frames"] for _, e in jobs), "max_mean_diff": max(diffs, default=0.0),
            "pack_bytes": manifest.get("bytes"), "pack_min_psnr_db": min((e["psnr_db"] for _, e in jobs if e["psnr_db"]), default=None),
            "seconds": round(time.perf_counter() - started, 2)}


# ---- one seed: time a few steps, train for the epochs that fit, score --------------------------------------------


class OutOfTime(Exception):
    """Raised after an epoch when the next one would not end before the deadline."""


def training_clips(config, root: Path, stride: int = 1) -> int:
    """The clips an epoch of ``config`` trains on, counted as ``train`` counts them (held-out part left out)."""
    from mnad.data import ClipDataset, FrameStore
    from mnad.train import split_holdout, training_videos

    t = config.model.t_length
    videos, _ = split_holdout(training_videos(config, root), config.train.holdout, t, config.train.holdout_videos)
    return len(ClipDataset(FrameStore(videos, config.model.image_size, config.model.channels, cache=False), t, stride=stride))


def probe_epoch_seconds(config, root: Path, work: Path, steps: int) -> dict:
    """Seconds one epoch of ``config`` takes here, from a 2-epoch run over every n-th clip (``steps`` steps an epoch),
    the second epoch timed: the real loop (data loading, step, logging), warmed up."""
    from mnad.train import train

    batch = config.train.batch_size
    clips = training_clips(config, root)
    stride = max(1, clips // max(steps * batch, 1))
    probe_steps = training_clips(config, root, stride) // batch
    seconds: list[float] = []
    cfg = config.override(["train.epochs=2", f"train.clip_stride={stride}", "train.keep_epochs=false"])
    train(cfg, root, work, overwrite=True, progress=False, on_epoch=lambda epoch, record: seconds.append(record["seconds"]))
    per_step = seconds[-1] / max(probe_steps, 1)
    return {"steps_per_epoch": clips // batch, "probe_steps": probe_steps, "s_per_step": per_step,
            "epoch_s": per_step * (clips // batch), "probe_epoch_s": seconds}


def shared_estimate(probe_dir: Path, seed: int, mine: float, expected: int, wait_s: float) -> float:
    """The slowest of the seeds' epoch estimates (they train at once, so they plan the same number of epochs)."""
    probe_dir.mkdir(parents=True, exist_ok=True)
    (probe_dir / f"seed{seed}.json").write_text(json.dumps({"epoch_s": mine}), encoding="utf-8")
    until = time.time() + wait_s
    while len(list(probe_dir.glob("seed*.json"))) < expected and time.time() < until:
        time.sleep(0.5)
    return max(json.loads(p.read_text(encoding="utf-8"))["epoch_s"] for p in probe_dir.glob("seed*.json"))


def seed_worker(args: argparse.Namespace) -> int:
    import torch

    from mnad.checkpoint import TRAIN_STATE_FILE, load_model
    from mnad.config import Config
    from mnad.evaluate import evaluate
    from mnad.train import train

    result: dict = {"seed": args.seed}
    run_dir, root = Path(args.run_dir), Path(args.root)
    try:
        config = Config.from_dict(json.loads(Path(args.config).read_text(encoding="utf-8"))).override([f"train.seed={args.seed}"])
        probe = probe_epoch_seconds(config, root, run_dir / "probe", args.probe_steps)
        epoch_s = shared_estimate(Path(args.probe_dir), args.seed, probe["epoch_s"], args.n_seeds, wait_s=120)
        epoch_cost = 1.05 * epoch_s + 1.0  # + writing the checkpoint
        left = args.deadline - time.time() - args.eval_reserve
        fit = max(1, int(left // epoch_cost))
        epochs = args.epochs or min(config.train.epochs, fit)
        result.update(probe=probe, epoch_s_estimate=epoch_s, recipe_epochs=config.train.epochs, epochs_planned=epochs)
        print(f"seed {args.seed}: an epoch takes about {epoch_s:.1f} s here ({probe['steps_per_epoch']} steps); the recipe's "
              f"{config.train.epochs} epochs would take {config.train.epochs * epoch_cost / 60:.1f} min; the budget leaves "
              f"{left / 60:.1f} min: training {epochs} epochs", flush=True)
        config = config.override([f"train.epochs={epochs}"])
        seconds: list[float] = []
        records: list[dict] = []

        def on_epoch(epoch: int, record: dict) -> None:
            seconds.append(record["seconds"])
            records.append(record)
            print(f"seed {args.seed}: epoch {epoch}/{epochs} {record['seconds']:.1f} s loss {record.get('loss_total', float('nan')):.5f}",
                  flush=True)
            if epoch < epochs and time.time() + 1.15 * max(seconds) + 1.0 > args.deadline - args.eval_reserve:
                raise OutOfTime(epoch)

        started = time.time()
        try:
            model, _ = load_model(train(config, root, run_dir / "run", overwrite=True, progress=False, on_epoch=on_epoch))
            result["stopped_early"] = False
        except OutOfTime:  # the last epoch's checkpoint holds the weights and the memory items
            model, _ = load_model(run_dir / "run" / TRAIN_STATE_FILE, expect=config)
            result["stopped_early"] = True
        result.update(epochs_done=len(records), train_seconds=round(time.time() - started, 1), epoch_seconds=seconds,
                      last_epoch=records[-1] if records else None)
        if torch.cuda.is_available() and config.train.device.startswith("cuda"):
            result["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
        started = time.time()
        metrics = evaluate(model, config, root, out_dir=run_dir / "eval", device=config.train.device, progress=False,
                           overwrite=True)
        result.update(eval_seconds=round(time.time() - started, 1), micro_auc=metrics["micro_auc"], macro_auc=metrics["macro_auc"],
                      per_video_auc=metrics["per_video_auc"], frames_scored=metrics["frames_scored"])
        print(f"seed {args.seed}: micro AUC {metrics['micro_auc']}, macro AUC {metrics['macro_auc']}", flush=True)
    except Exception as exc:  # reported in the JSON: the other seeds and the DDP check still count
        result["error"] = "".join(traceback.format_exception(exc)[-6:])
        print(result["error"], file=sys.stderr, flush=True)
    Path(args.result).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0 if "error" not in result else 1


# ---- DDP under torchrun ------------------------------------------------------------------------------------------


def ddp_worker(args: argparse.Namespace) -> int:
    """One rank under torchrun: join the group with ``--backend``, check an all-reduce, train one short epoch with
    mnad's DDP path (train() joins the group already formed), rank 0 writes what happened."""
    import torch
    import torch.distributed as dist

    from mnad import distributed
    from mnad.config import Config
    from mnad.train import train

    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    config = Config.from_dict(json.loads(Path(args.config).read_text(encoding="utf-8")))
    device = torch.device("cpu")
    if config.train.device.startswith("cuda"):
        gpu = local % torch.cuda.device_count()
        os.environ["LOCAL_RANK"] = str(gpu)  # more ranks than GPUs share them: mnad puts a rank on cuda:LOCAL_RANK
        torch.cuda.set_device(gpu)
        device = torch.device("cuda", gpu)
    dist.init_process_group(args.backend, rank=rank, world_size=world)
    try:
        check = torch.full((4,), float(rank + 1), device=device)
        dist.all_reduce(check)
        devices = distributed.all_gather_objects(str(device), distributed.setup(config.train.device))
        started = time.time()
        train(config, Path(args.root), Path(args.run_dir), overwrite=True, progress=False)
        if rank == 0:
            log = [json.loads(line) for line in (Path(args.run_dir) / "train_log.jsonl").read_text(encoding="utf-8").splitlines()]
            Path(args.result).write_text(json.dumps({
                "backend": args.backend, "world_size": world, "devices": devices, "all_reduce_ok": bool((check == world * (world + 1) / 2).all()),
                "sync_batchnorm": config.train.sync_batchnorm, "train_seconds": round(time.time() - started, 1), "log": log},
                indent=2), encoding="utf-8")
    finally:
        distributed.cleanup()
    return 0


def ddp_check(config, root: Path, work: Path, logs: Path, *, device: str, timeout: float) -> dict:
    """DDP with 2 ranks: NCCL on CUDA (on one GPU both ranks share it; NCCL refuses that, so then gloo on the GPU
    too), gloo on CPU. One short epoch (about 40 global batches) each; stops at the first backend that works."""
    import torch

    gpus = torch.cuda.device_count() if device.startswith("cuda") else 0
    backends = ["nccl", "gloo"] if gpus else ["gloo"]
    batch = config.train.batch_size
    stride = max(1, training_clips(config, root) // (40 * batch))
    cfg = config.override(["train.epochs=1", f"train.clip_stride={stride}", "train.sync_batchnorm=true", "train.keep_epochs=false"])
    (work / "ddp").mkdir(parents=True, exist_ok=True)
    (work / "ddp" / "config.json").write_text(json.dumps(cfg.to_dict()), encoding="utf-8")
    attempts = []
    for backend in backends:
        run_dir, result = work / "ddp" / backend, work / "ddp" / f"{backend}.json"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(Path(__file__).resolve()),
                   "ddp", "--backend", backend, "--config", str(work / "ddp" / "config.json"), "--root", str(root),
                   "--run-dir", str(run_dir), "--result", str(result)]
        started = time.time()
        log_path = logs / f"ddp_{backend}.log"
        with log_path.open("w", encoding="utf-8") as log:
            try:
                rc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=_child_env(3 if gpus else 1), timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
        attempt: dict = {"backend": backend, "world_size": 2, "gpus": gpus, "ranks_per_gpu": 2 / gpus if gpus else None,
                         "returncode": rc, "seconds": round(time.time() - started, 1)}
        if rc == 0 and result.is_file():
            attempt.update(json.loads(result.read_text(encoding="utf-8")), ok=True)
        else:
            attempt.update(ok=False, log_tail=log_path.read_text(encoding="utf-8")[-3000:])
        attempts.append(attempt)
        if attempt["ok"]:
            break
    ok = next((a for a in attempts if a["ok"]), None)
    return {"ok": ok is not None, "backend": ok["backend"] if ok else None, "attempts": attempts}


# ---- the whole run ----------------------------------------------------------------------------------------------


def environment(device: str) -> dict:
    import cv2
    import numpy as np
    import torch

    env = {"python": sys.version.split()[0], "torch": torch.__version__, "torch_cuda": torch.version.cuda, "numpy": np.__version__,
           "opencv": cv2.__version__, "cpus": os.cpu_count(), "cuda_available": torch.cuda.is_available(), "device": device}
    if torch.cuda.is_available():
        env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        try:
            version = torch.cuda.nccl.version()
            env["nccl"] = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
        except (AttributeError, RuntimeError):
            env["nccl"] = None
        env["bf16_native"] = torch.cuda.is_bf16_supported()
    return env


def _child_env(threads: int) -> dict:
    src = str(ROOT / "src")
    path = os.environ.get("PYTHONPATH", "")
    return dict(os.environ, PYTHONPATH=f"{src}{os.pathsep}{path}" if path else src, OMP_NUM_THREADS=str(threads))


def build_config(args: argparse.Namespace, unpacked: dict):
    from mnad.config import load_config

    overrides = [f"dataset={unpacked['dataset']}", f"train.device={args.device}"]
    if args.tiny:  # seconds on a CPU: the frames at the pack's size, a narrow network, one epoch
        overrides += [f"model.image_size={unpacked['size']}", "model.width=8", "train.epochs=1"]
    return load_config(args.recipe).override(overrides + args.overrides)


def archive_logs(logs: Path, dest: Path) -> None:
    """Every file under ``logs`` into the one archive ``dest`` (written atomically), by its path under ``logs``."""
    import io
    import tarfile

    from mnad.atomic import atomic_write

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(p for p in logs.rglob("*") if p.is_file()):
            tar.add(path, arcname=str(path.relative_to(logs)))
    atomic_write(dest, buffer.getvalue())


def run(args: argparse.Namespace) -> int:
    started = time.time()
    deadline = started + args.budget_seconds
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logs: Path | None = None
    procs: list = []  # (seed, process, log file)
    from mnad.errors import Terminated
    from mnad.interrupts import raise_terminated_on_signals, restore_handlers

    previous_handlers = raise_terminated_on_signals()  # SIGTERM (gpu_run.sh's time limit): the JSON and logs still written
    result: dict = {"schema": SCHEMA, "created": datetime.now(UTC).isoformat(timespec="seconds"), "command": sys.argv,
                    "budget_seconds": args.budget_seconds, "recipe": args.recipe, "paper_micro_auc": PAPER_MICRO_AUC, "notes": []}
    try:
        result["environment"] = environment(args.device)
        print(f"gpu_paper_recipe: {json.dumps(result['environment'])}", flush=True)
        if args.device.startswith("cuda") and not result["environment"]["cuda_available"]:
            raise RuntimeError("--device cuda, but torch sees no GPU (a CPU-only torch build, or no driver)")
        work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="mnad-gpu-"))
        shutil.rmtree(work / "probe", ignore_errors=True)  # the seeds' shared estimate: this run's only
        logs = work / "logs"  # archived into out/LOGS_FILE at the end, whatever happens
        shutil.rmtree(logs, ignore_errors=True)
        logs.mkdir(parents=True)
        unpacked = unpack(Path(args.pack), work / "data")
        result["unpack"] = unpacked
        print(f"gpu_paper_recipe: unpacked {unpacked['frames']} frames in {unpacked['seconds']} s", flush=True)
        root = Path(unpacked["root"])
        config = build_config(args, unpacked)
        if config.model.image_size != unpacked["size"]:
            result["notes"].append(f"the pack holds {unpacked['size']}px frames, the recipe trains at {config.model.image_size}px: mnad resizes them")
        result["config"] = config.to_dict()
        (work / "config.json").write_text(json.dumps(config.to_dict()), encoding="utf-8")

        ddp: dict = {}
        ddp_thread = None
        if args.ddp:
            def check_ddp() -> None:
                try:
                    ddp.update(ddp_check(config, root, work, logs, device=args.device, timeout=max(60.0, min(240.0, deadline - time.time()))))
                except Exception as exc:
                    ddp.update(ok=False, error="".join(traceback.format_exception(exc)[-4:]))

            ddp_thread = threading.Thread(target=check_ddp, daemon=True)
            ddp_thread.start()

        threads = max(1, (os.cpu_count() or 1) // (len(args.seeds) + 2)) if args.device.startswith("cuda") else 1  # CPU: all share the cores
        for seed in args.seeds:
            command = [sys.executable, str(Path(__file__).resolve()), "seed", "--seed", str(seed), "--config", str(work / "config.json"),
                       "--root", str(root), "--run-dir", str(work / f"seed{seed}"), "--result", str(work / f"seed{seed}.json"),
                       "--deadline", str(deadline), "--eval-reserve", str(args.eval_reserve), "--probe-dir", str(work / "probe"),
                       "--n-seeds", str(len(args.seeds)), "--probe-steps", str(args.probe_steps), "--epochs", str(args.epochs or 0)]
            log = (logs / f"seed{seed}.log").open("w", encoding="utf-8")
            procs.append((seed, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=_child_env(threads)), log))
        seeds = []
        for seed, proc, log in procs:
            try:
                proc.wait(timeout=max(1.0, deadline + 30 - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
            path = work / f"seed{seed}.json"
            seeds.append(json.loads(path.read_text(encoding="utf-8")) if path.is_file()
                         else {"seed": seed, "error": f"no result (exit status {proc.returncode})"})
            for name in ("run/train_log.jsonl", "run/config.json", "eval/metrics.json"):
                if (work / f"seed{seed}" / name).is_file():
                    shutil.copy(work / f"seed{seed}" / name, logs / f"seed{seed}_{Path(name).name}")
        result["seeds"] = seeds
        aucs = [s["micro_auc"] for s in seeds if s.get("micro_auc") is not None]
        macros = [s["macro_auc"] for s in seeds if s.get("macro_auc") is not None]
        result["summary"] = {"seeds_scored": len(aucs), "micro_auc_mean": statistics.fmean(aucs) if aucs else None,
                             "micro_auc_std": statistics.stdev(aucs) if len(aucs) > 1 else None,
                             "macro_auc_mean": statistics.fmean(macros) if macros else None,
                             "epochs_done": [s.get("epochs_done") for s in seeds], "recipe_epochs": config.train.epochs}
        if ddp_thread is not None:
            ddp_thread.join(timeout=max(1.0, deadline + 60 - time.time()))
            result["ddp"] = dict(ddp) if ddp else {"ok": False, "error": "the DDP check did not finish in time"}
    except (Exception, Terminated) as exc:
        result["error"] = f"stopped by {exc.signal}" if isinstance(exc, Terminated) else "".join(traceback.format_exception(exc)[-6:])
        print(result["error"], file=sys.stderr)
    finally:
        restore_handlers(previous_handlers)
        for _, proc, log in procs:  # stopped early (SIGTERM, an error): no seed outlives the run, its log is closed
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    if logs is not None:
        try:
            archive_logs(logs, out / LOGS_FILE)
            result["logs"] = LOGS_FILE
        except Exception as exc:  # the JSON is written all the same
            result.setdefault("error", f"the logs could not be archived: {exc}")
    result["seconds"] = round(time.time() - started, 1)
    from mnad.atomic import atomic_write

    atomic_write(out / RESULT_FILE, (json.dumps(result, indent=2) + "\n").encode())
    summary = result.get("summary", {})
    print(f"gpu_paper_recipe: micro AUC {summary.get('micro_auc_mean')} over {summary.get('seeds_scored')} seeds "
          f"(epochs {summary.get('epochs_done')}); DDP {'ok' if result.get('ddp', {}).get('ok') else 'FAILED or skipped'}; "
          f"wrote {out / RESULT_FILE} ({result['seconds']} s)", flush=True)
    ok = "error" not in result and summary.get("seeds_scored") == len(args.seeds) and (not args.ddp or result.get("ddp", {}).get("ok"))
    return 0 if ok else 1


# ---- command line -----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("pack", help="pack a dataset's frames at the training size (run where the data is)")
    s.add_argument("--data", required=True, help="the dataset folder, standard layout (e.g. ../shared/data/ped2)")
    s.add_argument("--out", default=str(ROOT / "gpu_pack"), help="folder for <dataset>_<size>/ (default gpu_pack/, ignored by git)")
    s.add_argument("--size", type=int, default=256, help="frame size: the recipe's model.image_size (256 for ped2_pred)")
    s.add_argument("--videos", type=int, help="only the first N videos of each split (a tiny pack, for testing)")
    s.add_argument("--limit-mib", type=float, default=TRANSFER_LIMIT / 2**20,
                   help=f"refuse a pack that does not fit with this working tree in this many MiB (default {TRANSFER_LIMIT / 2**20:.0f})")

    s = sub.add_parser("run", help="unpack, train the seeds, check DDP, score, write the JSON (run on the GPU machine)")
    s.add_argument("--pack", default=str(ROOT / "gpu_pack" / "ped2_256"), help="the pack folder (holds manifest.json)")
    s.add_argument("--out", default=os.environ.get("OUT", "gpu_out"), help="folder for the JSON and the logs (default $OUT)")
    s.add_argument("--work", help="folder for the frames, runs and checkpoints (default: a new temporary folder)")
    s.add_argument("--recipe", default="ped2_pred", help="mnad recipe (default ped2_pred, the paper's)")
    s.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    s.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds, trained at once (default 0 1 2)")
    s.add_argument("--budget-seconds", type=float, default=480, help="wall clock for the whole run; the epochs are fitted to it")
    s.add_argument("--eval-reserve", type=float, help="seconds kept for scoring the test set (default 60, 10 with --tiny)")
    s.add_argument("--epochs", type=int, help="train this many epochs instead of those that fit (the budget still stops training)")
    s.add_argument("--probe-steps", type=int, help="steps per epoch of the timing run (default 40, 2 with --tiny)")
    s.add_argument("--no-ddp", dest="ddp", action="store_false", help="skip the DDP check")
    s.add_argument("--tiny", action="store_true", help="the pack's frame size, width 8, 1 epoch: the whole path in seconds on a CPU")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="any config field, e.g. --set train.bf16=true --set train.compile=true")

    s = sub.add_parser("seed")  # internal: one seed, in its own process
    for name in ("--config", "--root", "--run-dir", "--result", "--probe-dir"):
        s.add_argument(name, required=True)
    for name, kind in (("--seed", int), ("--deadline", float), ("--eval-reserve", float), ("--n-seeds", int), ("--probe-steps", int),
                       ("--epochs", int)):
        s.add_argument(name, type=kind, required=True)

    s = sub.add_parser("ddp")  # internal: one rank under torchrun
    for name in ("--backend", "--config", "--root", "--run-dir", "--result"):
        s.add_argument(name, required=True)


    args = p.parse_args(argv)
    if args.command == "pack":
        from mnad.errors import MNADError

        try:
            dest = pack(Path(args.data), Path(args.out), args.size, args.videos, limit=int(args.limit_mib * 2**20))
        except (PackError, MNADError, OSError) as exc:
            print(f"gpu_paper_recipe.py: error: {exc}", file=sys.stderr)
            return 1
        manifest = json.loads((dest / "manifest.json").read_text(encoding="utf-8"))
        psnr = [e["psnr_db"] for entries in manifest["videos"].values() for e in entries if e["psnr_db"]]
        print(f"packed {sum(len(v) for v in manifest['videos'].values())} videos ({manifest['codec']}) into {dest}: "
              f"{manifest['bytes'] / 2**20:.1f} MiB, PSNR against the frames mnad reads {min(psnr, default=float('nan')):.1f} dB (worst video)")
        tree = tree_bytes()
        print(f"working tree + pack: {(tree + manifest['bytes']) / 2**20:.1f} MiB of the {args.limit_mib:g} MiB a device transfer takes"
              if tree is not None else "git cannot list this working tree: its size and the pack's together are not checked")
        return 0
    if args.command == "seed":
        return seed_worker(args)
    if args.command == "ddp":
        return ddp_worker(args)
    args.eval_reserve = args.eval_reserve if args.eval_reserve is not None else (10.0 if args.tiny else 60.0)
    args.probe_steps = args.probe_steps or (2 if args.tiny else 40)
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
