"""Several processes, one model: the torch.distributed plumbing behind ``torchrun ... -m mnad train``.

torchrun (or SLURM through it) starts one process per device and describes the job in environment variables
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). ``setup`` joins that process group: NCCL on CUDA, gloo on
CPU. Without those variables it returns a one-process context and nothing here communicates, so the same training
code runs unchanged on one process.

What each rank does (docs/distributed.md has the full story):

- ``train.batch_size`` is the GLOBAL batch; each rank takes ``batch_size / world_size`` clips of it. The sampler
  draws one permutation of the clips from (seed, epoch), the same on every rank and for any number of ranks, and
  global batch b is always the clips at positions [b*B, (b+1)*B) of it: rank r gets the positions congruent to r
  modulo the world size. A run on N ranks therefore sees exactly the batches of a one-process run.
- Gradients are averaged by DistributedDataParallel. Every loss term is a mean over equally sized per-rank shards,
  so the average of the per-rank gradients is the gradient of the global batch's loss, provided BatchNorm sees the
  global batch (``train.sync_batchnorm``): without it each rank normalises its own share, which couples the samples
  otherwise than one process does, and only rank 0's running statistics are kept (DDP broadcasts its buffers).
- The memory update reduces the per-item max score (all-reduce MAX) and the per-item weighted query sums
  (all-reduce SUM) across ranks (``Context.reduce_max`` / ``reduce_sum``, passed to ``Memory.update``): the update
  equals the one over the concatenated global batch, and every rank holds identical items after every step.
- BatchNorm normalises with per-rank statistics unless ``train.sync_batchnorm``: then torch's SyncBatchNorm on
  GPUs, ``GlobalBatchNorm2d`` below on CPU (torch's is GPU-only), both using the statistics of the global batch.
- Rank 0 alone checks and writes the run folder and evaluation's outputs. Each such step, and each where a rank
  reads data of its own, is taken ``together``: one all-reduce says whether every rank got through it, so a rank
  that fails there stops the others at once (``RankFailed``) instead of leaving them at the next collective.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, DistributedSampler

from mnad.errors import ConfigError, MNADError, Terminated
from mnad.launch import multi_process_launch  # one definition, torch-free, that the CLI reads too
from mnad.precision import checked_device

T = TypeVar("T")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum over all ranks (a new tensor)."""
    tensor = tensor.clone()
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise max over all ranks (a new tensor)."""
    tensor = tensor.clone()
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


@dataclass(frozen=True)
class Context:
    """Where this process stands in the job. The defaults describe a plain single-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, logs, scores and progress."""
        return self.rank == 0

    @property
    def reduce_max(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """For ``Memory.update(reduce_max=...)``: None on one process."""
        return all_reduce_max if self.enabled else None

    @property
    def reduce_sum(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """For ``Memory.update(reduce_sum=...)``: None on one process."""
        return all_reduce_sum if self.enabled else None


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError as exc:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from exc


def launch_ranks(world_size: int, device: torch.device) -> tuple[int, int]:
    """(RANK, LOCAL_RANK) of this process from a multi-process launch's environment, checked before any group is
    joined (``setup`` calls it only under ``multi_process_launch()``: MASTER_ADDR and MASTER_PORT set; a WORLD_SIZE
    left exported in a shell is not a launch): each a whole number, RANK below WORLD_SIZE, and, on CUDA, a
    LOCAL_RANK this machine has a GPU for. Otherwise torch would wait for ranks that never come (RANK >= WORLD_SIZE),
    or fail with a traceback."""
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world_size:
        raise ConfigError(f"environment variable RANK={rank} must lie in [0, WORLD_SIZE={world_size})")
    if local_rank < 0:
        raise ConfigError(f"environment variable LOCAL_RANK={local_rank} must be >= 0")
    if device.type == "cuda":
        check_local_gpu(local_rank)
    return rank, local_rank


def check_local_gpu(local_rank: int) -> None:
    """This rank's GPU, ``cuda:LOCAL_RANK``, must exist on this machine."""
    if not 0 <= local_rank < torch.cuda.device_count():
        raise ConfigError(f"environment variable LOCAL_RANK={local_rank}: this machine has {torch.cuda.device_count()} "
                          "CUDA device(s); start at most that many processes per machine (torchrun --nproc-per-node)")


# How long the processes of a job wait for each other to start (torch's own wait is 30 minutes): rank 0 for the others
# to reach its store at MASTER_ADDR:MASTER_PORT, the others for rank 0 to open it. A process of a job started by hand
# (WORLD_SIZE, RANK, MASTER_ADDR, MASTER_PORT set per machine) must start within this of the others.
JOIN_TIMEOUT = datetime.timedelta(minutes=5)
JOIN_STEP = datetime.timedelta(seconds=1)  # one attempt to reach rank 0's store


def join_store(rank: int, world_size: int) -> dist.TCPStore:
    """The job's key-value store, through which the ranks find each other, once every rank of the job has reached it
    (rank 0 hosts it, unless torchrun's agent does); a ConfigError that says what was awaited after JOIN_TIMEOUT.
    It waits in short steps, so that Ctrl-C and SIGTERM act at once (torch's own wait holds them off till its end)."""
    address, port_text = os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]
    if not port_text.isdecimal() or not 0 < int(port_text) < 2**16:
        raise ConfigError(f"environment variable MASTER_PORT={port_text!r} must be a port number, 1 to 65535")
    where = f"MASTER_ADDR={address!r}, MASTER_PORT={port_text}"
    deadline = time.monotonic() + JOIN_TIMEOUT.total_seconds()

    def too_late(awaited: str) -> ConfigError:
        seconds = f"{JOIN_TIMEOUT.total_seconds():g} s"
        return ConfigError(f"RANK={rank} waited {seconds} for {awaited}: start every rank, 0 to {world_size - 1}, with the "
                           f"same MASTER_ADDR and MASTER_PORT within {seconds} of each other, or use torchrun (docs/distributed.md)")

    host = rank == 0 and not _torchrun_agent()
    while not host and not _listening(address, int(port_text)):  # in Python: torch's own retries log pages of C++ errors
        if time.monotonic() > deadline:
            raise too_late(f"rank 0 to open the job's store at {where}")
        time.sleep(0.2)
    try:
        store = dist.TCPStore(address, int(port_text), is_master=host, timeout=JOIN_TIMEOUT, wait_for_workers=False)
    except (RuntimeError, ValueError) as exc:  # DistNetworkError (a RuntimeError): the port taken, the address not this machine's
        text = str(exc).strip()
        detail = text.splitlines()[0][:300] if text else type(exc).__name__
        raise ConfigError(f"cannot open the job's store at {where} (RANK={rank} of WORLD_SIZE={world_size}): {detail}; "
                          "start the job with torchrun (docs/distributed.md)") from exc
    joined = _key("joined")
    store.add(joined, 1)
    while (count := store.add(joined, 0)) < world_size:
        if time.monotonic() > deadline:
            raise too_late(f"the job's other processes to reach its store at {where}: {count - 1} of the "
                           f"{world_size - 1} others came")
        time.sleep(0.05)
    return store


def _listening(address: str, port: int) -> bool:
    """Whether something accepts connections at ``address:port`` (JOIN_STEP to answer)."""
    try:
        with socket.create_connection((address, port), timeout=JOIN_STEP.total_seconds()):
            return True
    except OSError:
        return False


def _torchrun_agent() -> bool:
    """torchrun's agent hosts the job's store (the ranks are all its clients)."""
    return os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"


def setup(device: str | torch.device = "cpu") -> Context:
    """Join the process group that torchrun's environment describes (once per process) and pick this rank's device.

    ``device`` is the configured one (``train.device``). Under a multi-process launch a CUDA device becomes
    ``cuda:LOCAL_RANK``, one GPU per process; the backend is NCCL for CUDA and gloo otherwise. Without a multi-process
    launch (``mnad.launch.multi_process_launch``: WORLD_SIZE > 1 with MASTER_ADDR and MASTER_PORT) and no group already
    initialised, nothing is joined (a WORLD_SIZE > 1 alone is warned about).
    """
    device = checked_device(device)
    if dist.is_available() and dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
        local_rank = _env_int("LOCAL_RANK", rank)
    else:
        world_size = _env_int("WORLD_SIZE", 1)
        if world_size < 1:
            raise ConfigError(f"environment variable WORLD_SIZE={world_size} must be >= 1 (the number of processes)")
        if world_size == 1:
            return Context(device=device)
        if not multi_process_launch():  # the one rule (mnad.launch), which every command and API entry reads
            missing = " and ".join(name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name))
            if os.environ.get("RANK", "").strip():  # a process told its rank is one of a job, whose launch is broken:
                # alone, each would train or score everything into the same folder
                raise ConfigError(f"environment variables WORLD_SIZE={world_size} and RANK={os.environ['RANK'].strip()} "
                                  f"are set but {missing} not: a multi-process launch needs them (torchrun sets all "
                                  "four, docs/distributed.md); set them, or unset WORLD_SIZE and RANK to run in one process")
            logging.getLogger("mnad").warning(
                f"WORLD_SIZE={world_size} is set but {missing} not: a WORLD_SIZE left exported in a shell is no "
                "multi-process launch, so this runs in one process (start a job with torchrun, docs/distributed.md, "
                "or unset WORLD_SIZE)")
            return Context(device=device)
        if not dist.is_available():
            raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
        rank, local_rank = launch_ranks(world_size, device)
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)  # before the NCCL group forms, so it binds to this rank's GPU
        store = join_store(rank, world_size)
        try:
            # the group's keys under this attempt's prefix, as torch's env:// does: torchrun restarts a job on one store
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=dist.PrefixStore(_key("group"), store),
                                    rank=rank, world_size=world_size)
            store.set_timeout(dist.default_pg_timeout)  # every rank has joined: later waits are torch's usual ones
        except (RuntimeError, ValueError) as exc:  # torch.distributed.DistError is a RuntimeError
            detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"cannot join the process group of WORLD_SIZE={world_size} (RANK={rank}, "
                              f"MASTER_ADDR={os.environ.get('MASTER_ADDR', '')!r}, MASTER_PORT={os.environ.get('MASTER_PORT', '')!r}): "
                              f"{detail}; start the job with torchrun (docs/distributed.md)") from exc
    if device.type == "cuda" and world_size > 1:
        check_local_gpu(local_rank)  # a group joined by the caller: LOCAL_RANK (or RANK) may name a GPU not here
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return Context(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def is_main_process() -> bool:
    """True unless this is a rank other than 0 of an initialised process group."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def cleanup() -> None:
    """Leave the process group (end of a torchrun job); nothing on one process."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: Context) -> None:
    """Wait until every rank gets here (e.g. until rank 0 has written a file the others read)."""
    if ctx.enabled:
        dist.barrier()


class RankFailed(MNADError):
    """Another rank of the job stopped with an error in a step the ranks take together (``together``): that rank's
    own error says why; this one stops with it, promptly, instead of waiting at the job's next collective."""


# how a rank left a ``together`` block, shared as one number: rank * len(_OUTCOMES) + the index here (a rank that
# got through contributes world_size * len(_OUTCOMES), so the MIN over the ranks names the lowest rank that did not)
_OUTCOMES = ("error", "KeyboardInterrupt", "SIGTERM", "SIGHUP")


def _outcome(exc: BaseException) -> int:
    if isinstance(exc, KeyboardInterrupt):
        return 1
    if isinstance(exc, Terminated):
        return 3 if exc.signal == "SIGHUP" else 2
    return 0


@contextlib.contextmanager
def together(ctx: Context, what: str) -> Iterator[None]:
    """A step the ranks finish together: every rank runs the block (which may do work on rank 0 only: a check, a
    write), then they agree in one all-reduce whether every rank got through it. A rank whose block raised raises
    its own exception; the others raise ``RankFailed`` naming that rank and ``what`` it was doing ("while writing
    the epoch's checkpoint"), or, where it was stopped by Ctrl-C or SIGTERM/SIGHUP, the same stop (KeyboardInterrupt
    or ``Terminated``: rank 0 alone says what a stopped run keeps). Without it, a rank that fails where the others
    do not would leave them waiting at the next collective (a barrier, DDP's gradient all-reduce) until torchrun's
    agent, the lost connection or NCCL's timeout (10 minutes or more) ended them.

    The all-reduce is also a barrier: no rank leaves the block before every rank has finished it. On one process
    the block just runs, nothing is communicated."""
    if not ctx.enabled:
        yield
        return
    kinds = len(_OUTCOMES)
    try:
        yield
    except BaseException as exc:
        with contextlib.suppress(RuntimeError):  # the others gone too (torch.distributed's errors): this one's own error stands
            _lowest(ctx.rank * kinds + _outcome(exc), ctx)
        raise
    lowest = _lowest(ctx.world_size * kinds, ctx)
    if lowest < ctx.world_size * kinds:
        rank, kind = divmod(lowest, kinds)
        if _OUTCOMES[kind] == "KeyboardInterrupt":
            raise KeyboardInterrupt
        if kind:
            raise Terminated(_OUTCOMES[kind])
        # the same text on every other rank: said once per torchrun job (first_to_say)
        raise RankFailed(f"rank {rank} of this job stopped with an error {what} (its own error message says why); "
                         "the other ranks stop with it")


def _lowest(value: int, ctx: Context) -> int:
    """The least of every rank's ``value`` (one all-reduce)."""
    tensor = torch.tensor([value], dtype=torch.int64, device=ctx.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return int(tensor.item())


def from_main(values: Sequence[float], ctx: Context) -> list[float]:
    """Rank 0's ``values`` on every rank (one broadcast of a few numbers; each rank passes as many); on one process
    ``values`` themselves."""
    if not ctx.enabled:
        return list(values)
    tensor = torch.tensor(list(values), dtype=torch.float64, device=ctx.device)
    dist.broadcast(tensor, src=0)
    return tensor.tolist()


def local_batch_size(global_batch: int, ctx: Context) -> int:
    """Each rank's share of ``train.batch_size``, which is the global batch over all ranks."""
    if global_batch % ctx.world_size:
        # both ways out: a resumed run keeps its batch size (train.RESUME_FIXED), so there only the rank count can change
        counts = [n for n in range(1, global_batch + 1) if global_batch % n == 0]
        counts_text = ", ".join(map(str, counts[:-1])) + f" or {counts[-1]} ranks" if len(counts) > 1 else "one process"
        raise ConfigError(f"train.batch_size={global_batch} (the global batch) is not divisible by the {ctx.world_size} ranks: "
                          f"run it on {counts_text} (in all, over the machines; the only way for a --resume, which keeps "
                          f"the run's batch size), or use a multiple of {ctx.world_size} for a new run")
    return global_batch // ctx.world_size


def sampler(dataset: Dataset, ctx: Context, *, seed: int) -> DistributedSampler:
    """This rank's clips: one permutation per (seed, epoch) (call ``set_epoch``), rank r taking every world_size-th
    position from r. Rank r's batch b of ``batch_size / world_size`` clips is its part of global batch b, which is
    the same set of clips for any number of ranks; the incomplete last global batch is dropped."""
    return DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed, drop_last=True)


def wrap(model: nn.Module, ctx: Context, *, sync_batchnorm: bool = False) -> nn.Module:
    """DistributedDataParallel around ``model`` under a multi-process launch, else ``model`` itself.

    Call the returned module for the forward pass (DDP hooks the gradient all-reduce into backward); reach the
    model's own attributes (``memory``, ``split_clip``) and its state dict through ``model``, which stays unwrapped.
    ``sync_batchnorm`` swaps the BatchNorm layers of ``model`` in place for synchronised ones (same parameters,
    buffers and state-dict keys, so checkpoints load into a plain model).
    """
    if not ctx.enabled:
        return model
    if sync_batchnorm:
        convert_sync_batchnorm(model, ctx.device)
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def mean_over_ranks(values: dict[str, float], ctx: Context) -> dict[str, float]:
    """The mean of each value over the ranks (e.g. per-epoch loss sums, so the log shows the global-batch loss)."""
    if not ctx.enabled or not values:
        return values
    keys = list(values)  # every rank lists the same keys in the same order; the log keeps the one-process order
    summed = all_reduce_sum(torch.tensor([values[k] for k in keys], dtype=torch.float64, device=ctx.device))
    return {k: float(v) / ctx.world_size for k, v in zip(keys, summed.tolist(), strict=True)}


def all_gather_objects(obj: Any, ctx: Context) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not ctx.enabled:
        return [obj]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def shard_contiguous(items: Sequence[T], sizes: Sequence[int], ctx: Context) -> list[T]:
    """This rank's contiguous run of ``items``, the runs in rank order and balanced by ``sizes`` (e.g. frame counts).

    Item i goes to rank floor(world_size * (size of the items before i) / total size): order is kept, so
    concatenating the ranks' runs in rank order gives ``items`` back.
    """
    if not ctx.enabled:
        return list(items)
    total, before, mine = max(sum(sizes), 1), 0, []
    for item, size in zip(items, sizes, strict=True):
        if min(ctx.world_size - 1, ctx.world_size * before // total) == ctx.rank:
            mine.append(item)
        before += size
    return mine


# --- one message per job --------------------------------------------------------------------------------------
#
# Every rank of a torchrun job runs the same command on the same arguments, so a mistake (a bad option, a run folder
# that exists, a batch size the ranks do not divide) is met by every rank at once: N identical `mnad: error:` lines,
# written at the same moment and interleaved. The ranks agree on who speaks through torchrun's own key-value store
# (the agent's, which the ranks reach before and without the process group): the first to say a text prints it.

STORE_TIMEOUT = datetime.timedelta(seconds=5)  # a message is never held up longer by a store that does not answer
_store: dist.Store | None = None
_said: Counter[str] = Counter()  # the texts this process has said, and how often


def _job_store() -> dist.Store | None:
    """torchrun's key-value store, shared by every rank of the job, or None: one process, a launch that is not
    torchrun's (no agent store to reach before the group is joined), or a store that cannot be reached."""
    global _store
    if _store is None and multi_process_launch() and _torchrun_agent():
        try:
            _store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                                   timeout=STORE_TIMEOUT)
        except (RuntimeError, ValueError):  # gone (the agent stopped): every rank then says its own messages
            return None
    return _store


def _key(name: str) -> str:
    """A store key of this job and attempt (torchrun restarts a failed job under the same store)."""
    return f"mnad/{os.environ.get('TORCHELASTIC_RUN_ID', '')}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/{name}"


def first_to_say(text: str, *, key: str | None = None, error: bool = False, unless_failed: bool = False) -> bool:
    """Whether this process prints ``text``: always on one process; in a torchrun job, only if no other rank has
    said it (the n-th time a rank says a text is one message of the job: a warning given twice is said twice).

    ``key`` is what counts as the same message (default ``text``); ``error`` records that the job failed;
    ``unless_failed``: not at all once a rank has said an error, for what follows from it (the interrupt torchrun
    sends the other ranks, their lost connection to the rank that stopped). Never raises: it runs in the CLI's error
    handlers. Where the store cannot be reached every rank prints: better twice than never."""
    if not multi_process_launch():
        return True
    try:
        store = _job_store()
        if store is None:
            return True
        failed = _key("failed")
        if unless_failed and store.check([failed]):
            return False
        if error:
            store.set(failed, "1")
        seen = key if key is not None else text
        _said[seen] += 1
        name = hashlib.sha1(seen.encode("utf-8", "surrogateescape")).hexdigest()
        return store.add(_key(f"said/{name}/{_said[seen]}"), 1) == 1
    except Exception:  # noqa: BLE001 (a message must never turn into a traceback)
        return True


def lost_peer(exc: BaseException) -> str | None:
    """What to say when ``exc`` is torch.distributed failing to reach another rank (killed, out of memory, or stopped
    by an error of its own) in a multi-process job; None for any other exception, which stays a bug to show.

    gloo raises a plain RuntimeError naming itself ("[.../gloo/transport/tcp/pair.cc:537] Read error ...:
    Connection reset by peer"); NCCL and the store a torch.distributed.DistError."""
    if not isinstance(exc, RuntimeError) or not multi_process_launch():
        return None
    text = str(exc).strip()
    markers = ("gloo", "NCCL", "Connection reset by peer", "Connection closed by peer", "Broken pipe")
    if not (isinstance(exc, dist.DistError) or any(m in text for m in markers)):
        return None
    detail = text.splitlines()[0] if text else type(exc).__name__
    if detail.startswith("[") and "] " in detail:  # the C++ source location
        detail = detail.split("] ", 1)[1]
    detail = detail.split(". This is typically caused", 1)[0][:300]
    return ("another process of this torchrun job stopped or cannot be reached (torchrun's report names it; "
            f"torch.distributed: {detail}); a training run resumes from its last checkpoint with --resume")


# --- synchronised BatchNorm ------------------------------------------------------------------------------------


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward is again the sum over ranks of the incoming gradients."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        return all_reduce_sum(tensor)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return all_reduce_sum(grad.contiguous())


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the samples of all ranks, on any device.

    torch's SyncBatchNorm runs on GPUs only; this is the CPU (gloo) counterpart. Mean and variance are computed in
    two all-reduced passes (sum, then sum of squared deviations) in fp32; the reduction is differentiable, so, as
    in SyncBatchNorm, each rank's input gradient includes the other ranks' losses through the shared statistics.
    Outside training, or on one process, it is a plain BatchNorm2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        xf = x.float()
        dims = [0, 2, 3]
        local_count = xf.new_full((1,), x.numel() // x.shape[1])
        sums = _AllReduceSum.apply(torch.cat([xf.sum(dims), local_count]))
        count = sums[-1]
        mean = sums[:-1] / count
        centred = xf - mean[None, :, None, None]
        var = _AllReduceSum.apply(centred.square().sum(dims)) / count  # biased, used to normalise
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), factor)
                unbiased = var.detach() * count / (count - 1).clamp(min=1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Swap every BatchNorm2d under ``module`` (in place) for a synchronised one sharing its parameters and buffers."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if type(module) is nn.BatchNorm2d:
        converted = GlobalBatchNorm2d(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        if module.affine:
            converted.weight, converted.bias = module.weight, module.bias
        if module.track_running_stats:
            converted.running_mean, converted.running_var = module.running_mean, module.running_var
            converted.num_batches_tracked = module.num_batches_tracked
        converted.train(module.training)
        module = converted
    for name, child in list(module.named_children()):
        module.add_module(name, convert_sync_batchnorm(child, device))
    return module
