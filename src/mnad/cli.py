"""The ``mnad`` command: a thin layer over the Python API (mnad.train, mnad.evaluate, mnad.checkpoint)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from pathlib import Path

import torch

from mnad.config import Config, load_config, recipe_names
from mnad.errors import ConfigError, MNADError

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
    "smoothing": "eval.smoothing",
}
FLAG_FIELDS = {"bf16": "train.bf16", "channels_last": "train.channels_last", "no_memory": "model.memory", "no_test_update": "eval.test_update"}
# Commands that only score: --bf16 means bf16 while scoring.
SCORING_FLAG_FIELDS = {"bf16": "eval.bf16", "channels_last": "eval.channels_last", "compile": "eval.compile", "no_test_update": "eval.test_update"}


def add_config_options(parser: argparse.ArgumentParser, *, model_options: bool) -> None:
    group = parser.add_argument_group("config overrides")
    names = list(OPTION_FIELDS) if model_options else ["alpha", "gamma", "normalization", "smoothing", "device", "threads", "dataset"]
    for name in names:
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, help=f"sets {OPTION_FIELDS[name]}")
    flags = FLAG_FIELDS if model_options else SCORING_FLAG_FIELDS
    for name, target in flags.items():
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, action="store_true", help=f"sets {target}")
    parser.set_defaults(flag_fields=flags)
    group.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                       help="any other config field, e.g. --set model.update_max_over=assigned (repeatable)")


def apply_options(config: Config, args: argparse.Namespace) -> Config:
    overrides = [f"{field}={getattr(args, name)}" for name, field in OPTION_FIELDS.items() if getattr(args, name, None) is not None]
    for name, field in getattr(args, "flag_fields", {}).items():
        if getattr(args, name, False):
            overrides.append(f"{field}={'false' if name.startswith('no_') else 'true'}")
    config = config.override(overrides + args.overrides)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    return config


def cmd_train(args: argparse.Namespace) -> None:
    from mnad.train import train

    config = apply_options(load_config(args.recipe), args)
    if args.data:  # own footage: every video in the folder, the tail of each held out for calibration
        config = config.override(["dataset=", f"train.holdout={args.holdout}"])
    path = train(config, args.data or args.data_root, args.out, resume=args.resume, progress=not args.quiet)
    if _other_rank():
        return
    print(f"model written to {path}")


def _other_rank() -> bool:
    """Under torchrun, a rank other than 0: it has done its share of the work; rank 0 prints and writes."""
    from mnad.distributed import is_main_process

    return not is_main_process()


def cmd_evaluate(args: argparse.Namespace) -> None:
    from mnad.checkpoint import load_model
    from mnad.evaluate import evaluate

    model, config = load_model(args.checkpoint)
    config = apply_options(config, args)
    out = args.out or args.report  # a report needs saved scores: without --out they go into the report folder
    metrics = evaluate(model, config, args.data_root, labels_path=args.labels, out_dir=out, device=config.train.device,
                       progress=not args.quiet)
    if _other_rank():
        return
    print_metrics(metrics)
    if out:
        print(f"scores and metrics written to {out}")
    if args.report:
        from mnad.report import create_report

        command = "mnad " + shlex.join(getattr(args, "argv", None) or sys.argv[1:])
        page = create_report(model, config, args.data_root, out, args.report, checkpoint=args.checkpoint, labels=args.labels,
                             command=command, top_k=args.top_k, device=config.train.device)
        print(f"report written to {page}")


def cmd_report(args: argparse.Namespace) -> None:
    from mnad.report import rebuild_report

    print(f"report written to {rebuild_report(args.path, out=args.out)}")


def cmd_figures(args: argparse.Namespace) -> None:
    from mnad.checkpoint import load_model
    from mnad.figures import memory_figures, model_label

    model, config = load_model(args.checkpoint)
    config = apply_options(config, args)
    compare, labels = None, None
    if args.compare_checkpoint:
        compare, compare_config = load_model(args.compare_checkpoint)
        labels = (model_label(config, "model"), model_label(compare_config, "compared model"))
    record = memory_figures(model, config, args.data_root, args.out, compare, labels=labels, frames=args.frames,
                            clips=args.clips, max_queries=args.queries, seed=args.seed, device=config.train.device)
    for entry in record["models"]:
        print(f"{entry['label']}: mean max matching probability {entry['mean_max_probability']:.3f}, "
              f"{entry['items_used']} of {len(entry['item_usage'])} items nearest to some query")
    print(f"figures written to {args.out}")


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


def cmd_calibrate(args: argparse.Namespace) -> None:
    from mnad.checkpoint import load_model, save_model
    from mnad.data import list_videos, open_video
    from mnad.detect import calibrate, with_calibration
    from mnad.train import holdout_videos

    model, config = load_model(args.checkpoint)
    config = apply_options(config, args)
    if args.data:
        videos = [v for path in args.data for v in (list_videos(path) if _is_folder_of_videos(path) else [open_video(path)])]
    else:
        videos = holdout_videos(Path(args.checkpoint) if Path(args.checkpoint).is_dir() else Path(args.checkpoint).parent)
    calibration = calibrate(model, config, videos, false_alarm_rate=args.false_alarm_rate,
                            smoothing=config.eval.smoothing if args.smoothing is not None else None,
                            device=config.train.device, progress=not args.quiet)
    save_model(args.out, model, with_calibration(config, calibration))
    print(json.dumps(calibration, indent=2))
    print(f"calibrated model written to {args.out}")


def _is_folder_of_videos(path: str) -> bool:
    from mnad.data.sources import IMAGE_EXTENSIONS

    folder = Path(path)
    return folder.is_dir() and not any(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.iterdir())


def cmd_detect(args: argparse.Namespace) -> None:
    from mnad.checkpoint import load_model
    from mnad.detect import detect
    from mnad.export import load_onnx

    step = None
    if str(args.checkpoint).endswith(".onnx"):  # ONNX Runtime backend
        model, config, step = load_onnx(args.checkpoint)
    else:
        model, config = load_model(args.checkpoint)
    config = apply_options(config, args)
    fitted = config.eval.calibration.get("smoothing")
    if args.smoothing is not None and fitted is not None and config.eval.smoothing != fitted:
        raise ConfigError(f"{args.checkpoint}: its alert threshold was fitted on a {fitted}-frame mean of the score, not "
                          f"{config.eval.smoothing}: recalibrate with `mnad calibrate --smoothing {config.eval.smoothing}`")
    summary = detect(model, config, args.source, args.out, save_video=args.save_video, save_maps=args.save_maps,
                     region_sigma=args.region_sigma, fps=args.fps, reconnects=args.reconnects, max_frames=args.max_frames,
                     hysteresis=args.hysteresis, min_event_frames=args.min_event_frames, device=config.train.device,
                     progress=not args.quiet, step=step)
    print(json.dumps(summary, indent=2))


def cmd_export(args: argparse.Namespace) -> None:
    from mnad.checkpoint import load_model
    from mnad.export import export_onnx

    model, config = load_model(args.checkpoint)
    path = export_onnx(model, config, args.out)
    print(f"ONNX scoring model written to {path} (config and memory items in {path}.json)")


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
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-root", help="folder holding <dataset>/training (benchmark layouts)")
    source.add_argument("--data", help="own footage: a folder of normal video files and/or frame folders")
    p.add_argument("--holdout", type=float, default=0.1, help="with --data: fraction of each video kept for calibration")
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
    p.add_argument("--report", metavar="DIR", help="also write an HTML report (plots, localisation, provenance) to DIR")
    p.add_argument("--top-k", type=int, default=8, help="with --report: localisation thumbnails of this many top-scoring frames")
    p.add_argument("--quiet", action="store_true")
    add_config_options(p, model_options=False)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("report", help="rebuild the HTML report of an evaluation from its saved outputs (no scoring)")
    p.add_argument("path", help="report folder, evaluation folder (metrics.json, scores.csv), or a run folder holding one")
    p.add_argument("--out", help="folder for report.html (default: the report folder)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("figures", help="the paper's memory figures: matching probabilities (Fig. 5) and t-SNE (Figs. 1, 6)")
    p.add_argument("--checkpoint", required=True, help="model file, run folder, or shipped model name")
    p.add_argument("--data-root", required=True, help="folder holding <dataset>/testing (else its training videos are used)")
    p.add_argument("--out", required=True, help="folder for matching.png, tsne.png, figures.json")
    p.add_argument("--compare-checkpoint", help="a second model drawn beside the first (e.g. trained with lambda_separate=0)")
    p.add_argument("--frames", type=int, default=3, help="frames shown in the matching figure")
    p.add_argument("--clips", type=int, default=24, help="clips, spread over the videos, whose queries are used")
    p.add_argument("--queries", type=int, default=1500, help="queries sampled for the t-SNE")
    p.add_argument("--seed", type=int, default=0, help="seed of the query sample and the t-SNE")
    p.add_argument("--device", default=None, help="sets train.device")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    p.set_defaults(func=cmd_figures)

    p = sub.add_parser("demo", help="train and evaluate on a generated scene (no download, a few minutes)")
    p.add_argument("--out", help="folder for the generated data and the run (default: a temporary folder)")
    p.add_argument("--quiet", action="store_true")
    add_config_options(p, model_options=True)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("calibrate", help="fit score normalisation and alert threshold on normal footage (no labels)")
    p.add_argument("--checkpoint", required=True, help="model file, run folder, or shipped model name")
    p.add_argument("--data", nargs="*", help="normal footage: video files, frame folders or folders of them (default: the run's held-out part)")
    p.add_argument("--false-alarm-rate", type=float, default=0.01, help="fraction of normal frames allowed to alert")
    p.add_argument("--out", required=True, help="calibrated model file to write (.safetensors)")
    p.add_argument("--quiet", action="store_true")
    add_config_options(p, model_options=False)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("detect", help="score footage as it arrives: file, frame folder, glob, camera index or URL")
    p.add_argument("source", help="video file, frame folder, glob ('frames/*.jpg'), camera index (0) or rtsp:// / http:// URL")
    p.add_argument("--checkpoint", required=True, help="a calibrated model gives alerts and events (mnad calibrate)")
    p.add_argument("--out", required=True, help="folder for scores.csv, events.jsonl, events.csv, summary.json")
    p.add_argument("--save-video", action="store_true", help="write annotated.mp4: heatmap overlay and score timeline")
    p.add_argument("--save-maps", choices=["npy", "png"], help="write each frame's error map")
    p.add_argument("--region-sigma", type=float, default=0.0, help="mark regions above mean + SIGMA * std of the error")
    p.add_argument("--fps", type=float, default=25.0, help="frame rate of frame folders (for timestamps and the video)")
    p.add_argument("--reconnects", type=int, default=3, help="times to reopen a live source that stalls")
    p.add_argument("--max-frames", type=int, help="stop after this many frames")
    p.add_argument("--hysteresis", type=float, default=0.05, help="an event ends when the score falls this far below the threshold")
    p.add_argument("--min-event-frames", type=int, default=3, help="shorter events are dropped")
    p.add_argument("--quiet", action="store_true")
    add_config_options(p, model_options=False)
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("export", help="export the scoring step (memory as explicit input/output) to ONNX")
    p.add_argument("--checkpoint", required=True, help="model file, run folder, or shipped model name")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--out", required=True, help="file to write (.onnx)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("recipes", help="list the named recipes")
    p.add_argument("--show", action="store_true", help="print each recipe's full config")
    p.set_defaults(func=cmd_recipes)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command line, for reports' provenance
    try:
        args.func(args)
    except MNADError as exc:
        print(f"mnad: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mnad: interrupted", file=sys.stderr)
        return 130
    finally:
        if "mnad.distributed" in sys.modules:  # a torchrun job: leave the process group that train/evaluate joined
            sys.modules["mnad.distributed"].cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
