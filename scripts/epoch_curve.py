"""AUC against epochs: evaluate each epoch_NNN.safetensors a run kept (`--set train.keep_epochs=true`).

    python scripts/epoch_curve.py runs/ped2_pred_fast_seed1 --data-root ../shared/data \
        --out results/ped2_pred_fast_seed1/epoch_curve.json --bf16 --channels-last

Writes one record per epoch (micro and macro AUC, the epoch's training loss, the SHA-256 of the epoch file scored) to a
JSON file, rewritten after every epoch so that a stopped run keeps what it has and a rerun skips the epochs already
done. A rerun scores an epoch again when its file is not the one its record scored (a run trained again: the record's
model_sha256 differs; a record written before that field existed is kept as it is), and fills in a loss that was
null (the curve ran between the epoch's model file and its line in the training log) from the log.

Each record also says how it was scored (``scoring``: --bf16, --channels-last) and by which command; one curve is one
scoring: a rerun with other flags than the curve's records were scored with is refused (write it to another --out).
A record written before records said so is of the file's ``scoring``.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from pathlib import Path

from mnad.atomic import atomic_write
from mnad.checkpoint import EPOCH_GLOB, load_model
from mnad.evaluate import evaluate
from mnad.outputs import read_train_log
from mnad.report.provenance import file_sha256
from mnad.train import LOG_FILE

EPOCH_FILE = re.compile(r"epoch_(\d+)\.safetensors")


def kept_epochs(run: Path) -> dict[int, Path]:
    """The epoch models ``run`` kept, by epoch: ``epoch_NNN.safetensors`` only (an ``epoch_best.safetensors`` put
    there by hand is not one)."""
    return {int(m.group(1)): p for p in run.glob(EPOCH_GLOB) if (m := EPOCH_FILE.fullmatch(p.name))}


def stale(record: dict, sha256: str) -> bool:
    """Whether ``record`` scored another file than the one with ``sha256``: only a record that names its file can
    say so (one without model_sha256 is kept: scoring an epoch again costs minutes)."""
    return record.get("model_sha256") not in (None, sha256)


def parse_epochs(text: str) -> list[int]:
    """``--epochs``: comma-separated epoch numbers, each a whole number >= 1 (ValueError naming the first that is not)."""
    epochs = []
    for part in text.split(","):
        if not part.strip().isdecimal() or int(part) < 1:
            raise ValueError(f"--epochs {text!r}: {part.strip()!r} is not an epoch number (comma-separated whole numbers >= 1, "
                             "e.g. 2,4,8)")
        epochs.append(int(part))
    return sorted(set(epochs))


def record_scoring(record: dict, file_scoring: dict | None) -> dict | None:
    """How ``record`` was scored: its own ``scoring``, or for a record written before records said so, the file's."""
    return record.get("scoring", file_scoring)


def fail(message: str) -> int:
    print(f"epoch_curve.py: error: {message}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="epoch_curve.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="run folder holding epoch_NNN.safetensors")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--epochs", default="", help="comma-separated epochs to evaluate (default: all kept)")
    parser.add_argument("--bf16", action="store_true", help="score with bf16 autocast (the fast path)")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    command = "python scripts/epoch_curve.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    scoring = {"bf16": args.bf16, "channels_last": args.channels_last}

    try:
        wanted = parse_epochs(args.epochs) if args.epochs else None
    except ValueError as exc:
        return fail(str(exc))
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    kept = kept_epochs(args.run)
    if not kept:
        return fail(f"{args.run}: no epoch_NNN.safetensors; train with --set train.keep_epochs=true")
    wanted = wanted or sorted(kept)
    missing = [e for e in wanted if e not in kept]
    if missing:
        return fail(f"{args.run}: no checkpoint kept for epochs {missing}")
    log_path = args.run / LOG_FILE
    losses = {r["epoch"]: r.get("loss_total") for r in read_train_log(log_path)} if log_path.exists() else {}

    try:
        previous = json.loads(args.out.read_text(encoding="utf-8")) if args.out.exists() else None
        records = previous["epochs"] if previous else []
        file_scoring = previous.get("scoring") if previous else None
        others = [r["epoch"] for r in records if record_scoring(r, file_scoring) != scoring]
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        return fail(f"{args.out}: not an epoch curve this script wrote ({exc!r}); move it aside or write another --out")
    if others:
        theirs = record_scoring(next(r for r in records if r["epoch"] == others[0]), file_scoring)
        return fail(f"{args.out}: epochs {others} were scored with {theirs}, this run asks for {scoring}: one curve is one "
                    "scoring; rerun with those flags or write another --out")

    def write(recipe: str | None) -> None:
        records.sort(key=lambda r: r["epoch"])
        for record in records:  # a record from before records said how they were scored: the file's scoring
            record.setdefault("scoring", file_scoring)
        recipe = recipe if recipe is not None else previous["recipe"]
        result = {"run": args.run.name, "recipe": recipe, "scoring": scoring, "epochs": records}  # every record's (above)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(args.out, json.dumps(result, indent=2).encode())

    filled = False  # null losses the log now has, written with the next record or at the end
    for record in records:
        if record.get("loss_total") is None and losses.get(record["epoch"]) is not None:
            record["loss_total"] = losses[record["epoch"]]
            filled = True
    recipe = None
    for epoch in wanted:
        sha256 = file_sha256(kept[epoch])
        done = [r for r in records if r["epoch"] == epoch]
        if done and not stale(done[0], sha256):
            continue
        if done:
            print(f"epoch {epoch}: {kept[epoch].name} is not the file its record scored: scoring it again", flush=True)
            records.remove(done[0])
        model, config = load_model(kept[epoch])
        recipe = config.name
        config.eval.bf16, config.eval.channels_last = args.bf16, args.channels_last
        metrics = evaluate(model, config, args.data_root, progress=False)
        records.append({"epoch": epoch, "micro_auc": metrics["micro_auc"], "macro_auc": metrics["macro_auc"],
                        "loss_total": losses.get(epoch), "model_sha256": sha256, "scoring": scoring, "command": command})
        write(recipe)
        filled = False
        print(f"epoch {epoch}: micro {100 * metrics['micro_auc']:.2f} macro {100 * metrics['macro_auc']:.2f}", flush=True)
    if filled:
        write(recipe)
    return 0


if __name__ == "__main__":
    if status := main():  # a success returns (runpy, as tests/test_end_to_end.py runs it, sees no SystemExit)
        raise SystemExit(status)
