"""The ``mnad`` command: a thin layer over the Python API (mnad.train, mnad.evaluate, mnad.checkpoint)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from mnad.config import Config, load_config, recipe_names
from mnad.errors import MNADError

# Common options that map onto one config field each; anything else goes through --set section.field=value.
OPTION_FIELDS = {
    "dataset": "dataset",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "lr": "train.lr",
    "seed": "train.seed",
    "image_size": "model.image_size",
    "channels": "model.channels",
    "width": "model.width",
    "device": "train.device",
    "threads": "train.threads",
    "alpha": "eval.alpha",
    "gamma": "eval.gamma",
    "normalization": "eval.normalization",
}
FLAG_FIELDS = {"bf16": "train.bf16", "channels_last": "train.channels_last", "no_memory": "model.memory", "no_test_update": "eval.test_update"}


def add_config_options(parser: argparse.ArgumentParser, *, model_options: bool) -> None:
    group = parser.add_argument_group("config overrides")
    names = list(OPTION_FIELDS) if model_options else ["alpha", "gamma", "normalization", "device", "threads", "dataset"]
    for name in names:
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, help=f"sets {OPTION_FIELDS[name]}")
    flags = FLAG_FIELDS if model_options else {"no_test_update": FLAG_FIELDS["no_test_update"], "bf16": FLAG_FIELDS["bf16"]}
    for name, target in flags.items():
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, action="store_true", help=f"sets {target}")
    group.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                       help="any other config field, e.g. --set model.update_max_over=assigned (repeatable)")


def apply_options(config: Config, args: argparse.Namespace) -> Config:
    overrides = [f"{field}={getattr(args, name)}" for name, field in OPTION_FIELDS.items() if getattr(args, name, None) is not None]
    for name, field in FLAG_FIELDS.items():
        if getattr(args, name, False):
            overrides.append(f"{field}={'false' if name.startswith('no_') else 'true'}")
    return config.override(overrides + args.overrides)


def cmd_train(args: argparse.Namespace) -> None:
    from mnad.train import train

    config = apply_options(load_config(args.recipe), args)
    path = train(config, args.data_root, args.out, resume=args.resume, progress=not args.quiet)
    print(f"model written to {path}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from mnad.checkpoint import load_model
    from mnad.evaluate import evaluate

    model, config = load_model(args.checkpoint)
    config = apply_options(config, args)
    metrics = evaluate(model, config, args.data_root, labels_path=args.labels, out_dir=args.out, device=config.train.device,
                       progress=not args.quiet)
    print_metrics(metrics)
    if args.out:
        print(f"scores and metrics written to {args.out}")


def print_metrics(metrics: dict) -> None:
    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.2f}%"

    print(f"frame-level AUC: micro {pct(metrics['micro_auc'])}, macro {pct(metrics['macro_auc'])} "
          f"({metrics['frames_scored']} frames of {metrics['videos']} videos, {metrics['abnormal_frames']} abnormal)")
    for name, auc in metrics["per_video_auc"].items():
        print(f"  video {name}: {pct(auc)}")
    print(f"note: {metrics['note']}")


def cmd_demo(args: argparse.Namespace) -> None:
    """Generate the synthetic scene, train a small model on it and evaluate it: nothing to download."""
    from mnad.checkpoint import load_model
    from mnad.data.synthetic import make_synthetic_dataset
    from mnad.evaluate import evaluate
    from mnad.train import train

    out = Path(args.out or tempfile.mkdtemp(prefix="mnad-demo-"))
    root = make_synthetic_dataset(out / "data", size=64, seed=int(args.seed or 0)).parent
    print(f"synthetic scene written to {root / 'synthetic'}")
    config = apply_options(load_config("synthetic_pred"), args)
    model_path = train(config, root, out / "run", progress=not args.quiet)
    model, config = load_model(model_path)
    metrics = evaluate(model, config, root, out_dir=out / "run" / "eval", progress=not args.quiet)
    print_metrics(metrics)
    print(f"run folder: {out / 'run'}")


def cmd_recipes(args: argparse.Namespace) -> None:
    for name in recipe_names():
        if args.show:
            print(f"# {name}\n{json.dumps(load_config(name).to_dict(), indent=2)}")
        else:
            print(name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnad", description="Memory-guided normality for video anomaly detection")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model on the normal (training) videos of a dataset")
    p.add_argument("--recipe", default="ped2_pred", help=f"recipe name or TOML file ({', '.join(recipe_names())})")
    p.add_argument("--data-root", required=True, help="folder holding <dataset>/training, or a folder of normal videos")
    p.add_argument("--out", required=True, help="run folder: checkpoints, config, log")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_options(p, model_options=True)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="score the test videos and compute frame-level AUC")
    p.add_argument("--checkpoint", required=True, help="model file, run folder, or shipped model name")
    p.add_argument("--data-root", required=True, help="folder holding <dataset>/testing")
    p.add_argument("--labels", help="label file (.npy, .csv, UCSD .m); found beside the dataset if not given")
    p.add_argument("--out", help="folder for scores.csv and metrics.json")
    p.add_argument("--quiet", action="store_true")
    add_config_options(p, model_options=False)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("demo", help="train and evaluate on a generated scene (no download, a few minutes)")
    p.add_argument("--out", help="folder for the generated data and the run (default: a temporary folder)")
    p.add_argument("--quiet", action="store_true")
    add_config_options(p, model_options=True)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("recipes", help="list the named recipes")
    p.add_argument("--show", action="store_true", help="print each recipe's full config")
    p.set_defaults(func=cmd_recipes)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except MNADError as exc:
        print(f"mnad: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mnad: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
