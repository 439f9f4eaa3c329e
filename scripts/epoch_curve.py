"""AUC against epochs: evaluate each epoch_NNN.safetensors a run kept (`--set train.keep_epochs=true`).

    python scripts/epoch_curve.py runs/ped2_pred_fast_seed1 --data-root ../shared/data \
        --out results/ped2_pred_fast_seed1/epoch_curve.json --bf16 --channels-last

Writes one record per epoch (micro and macro AUC, the epoch's training loss) to a JSON file, rewritten after
every epoch so that a stopped run keeps what it has and a rerun skips the epochs already done.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from mnad.atomic import atomic_write
from mnad.checkpoint import load_model
from mnad.evaluate import evaluate
from mnad.outputs import read_train_log
from mnad.train import LOG_FILE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="run folder holding epoch_NNN.safetensors")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--epochs", default="", help="comma-separated epochs to evaluate (default: all kept)")
    parser.add_argument("--bf16", action="store_true", help="score with bf16 autocast (the fast path)")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    kept = {int(re.fullmatch(r"epoch_(\d+)\.safetensors", p.name).group(1)): p for p in args.run.glob("epoch_*.safetensors")}
    if not kept:
        raise SystemExit(f"{args.run}: no epoch_NNN.safetensors; train with --set train.keep_epochs=true")
    wanted = sorted(int(e) for e in args.epochs.split(",")) if args.epochs else sorted(kept)
    missing = [e for e in wanted if e not in kept]
    if missing:
        raise SystemExit(f"{args.run}: no checkpoint kept for epochs {missing}")
    log_path = args.run / LOG_FILE
    losses = {r["epoch"]: r.get("loss_total") for r in read_train_log(log_path)} if log_path.exists() else {}

    records = json.loads(args.out.read_text())["epochs"] if args.out.exists() else []
    done = {r["epoch"] for r in records}
    for epoch in wanted:
        if epoch in done:
            continue
        model, config = load_model(kept[epoch])
        config.eval.bf16, config.eval.channels_last = args.bf16, args.channels_last
        metrics = evaluate(model, config, args.data_root, progress=False)
        records.append({"epoch": epoch, "micro_auc": metrics["micro_auc"], "macro_auc": metrics["macro_auc"], "loss_total": losses.get(epoch)})
        records.sort(key=lambda r: r["epoch"])
        result = {"run": args.run.name, "recipe": config.name, "scoring": {"bf16": args.bf16, "channels_last": args.channels_last}, "epochs": records}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(args.out, json.dumps(result, indent=2).encode())
        print(f"epoch {epoch}: micro {100 * metrics['micro_auc']:.2f} macro {100 * metrics['macro_auc']:.2f}", flush=True)


if __name__ == "__main__":
    main()
