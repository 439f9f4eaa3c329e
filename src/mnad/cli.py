"""The ``mnad`` command: a thin layer over the Python API (mnad.train, mnad.evaluate, mnad.checkpoint)."""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import logging
import os
import shlex
import sys
from typing import Any, NoReturn

from mnad.config import DEFAULT_HOLDOUT, Config, load_config, own_footage_config, recipe_names
from mnad.errors import ConfigError, MNADError, Terminated, printable
from mnad.interrupts import raise_terminated_on_signals, restore_handlers
from mnad.launch import multi_process_launch

# OpenMP threads that wait for each other sleep at once instead of spinning: where another busy process shares the
# cores, a spinning thread burns the time slice its partner needs and scoring ran up to 9.4 times slower (issue #18;
# benchmarks/results/contention.json). torch's OpenMP runtime reads this once, as torch loads, so it is set here,
# before anything imports torch (nothing above does; mnad's package imports lazily). A user's own value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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


# What each option sets, for --help (the config field follows in parentheses).
OPTION_HELP = {
    "dataset": "dataset folder under --data-root (ped2, avenue, shanghai, ...)",
    "epochs": "training epochs",
    "batch_size": "clips per training step (the global batch under torchrun)",
    "lr": "Adam learning rate",
    "seed": "seed of the initial weights, memory items and batch order",
    "image_size": "frame size in pixels: a multiple of 8, 16 to 2048",
    "channels": "image channels: 1 (gray) or 3",
    "width": "channels of the first U-Net stage (queries have 8 x width), 1 to 1024",
    "device": "device to train on: cpu, cuda or cuda:N",
    "threads": "CPU threads of torch, at most 1024 (0: torch's default)",
    "alpha": "weight of PSNR in the anomaly score, 0 to 1 (1: PSNR only)",
    "gamma": "the memory is updated while scoring on frames whose regular score is below this",
    "normalization": "score normalisation: video (per-video min-max), causal (running) or calibrated",
    "smoothing": "trailing mean of the score over this many frames (1: none)",
}
# Commands that only score use --device and --threads for scoring (they are kept in the config's train section).
SCORING_OPTION_HELP = {"device": "device to score on: cpu, cuda or cuda:N",
                       "threads": "CPU threads while scoring: torch's, or ONNX Runtime's for an exported .onnx (0: their default)"}
FLAG_HELP = {
    "bf16": "bf16 autocast in training", "channels_last": "channels_last memory format in training",
    "no_memory": "the paper's baseline without memory", "no_test_update": "no memory update while the model scores",
}
SCORING_FLAG_HELP = {
    "bf16": "bf16 weights and autocast while scoring", "channels_last": "channels_last weights and inputs while scoring",
    "compile": "compile the scoring step (at the first frame, once per model and size; cached)", "no_test_update": "no memory update while scoring",
}
# What a command stopped by Ctrl-C, SIGTERM or SIGHUP leaves, as its last line says; the others write their outputs whole at
# their end (atomically), so nothing of theirs is written.
KEPT_WHEN_STOPPED = {
    "train": "the last finished epoch is kept: continue with --resume",  # when one had finished (kept_when_stopped)
    "detect": "the outputs of the frames scored so far are written",
    "demo": "the demo stopped part way (making its scene, training or evaluating): run it again with --overwrite",
}
NOTHING_WRITTEN = "nothing was written"
NO_EPOCH_FINISHED = "no epoch had finished, so there is no checkpoint to resume: start it again with --overwrite"
# stopped in its first epoch after a mid-epoch checkpoint (train.checkpoint_minutes)
FIRST_EPOCH_PART_KEPT = "a checkpoint part way through the first epoch is kept: continue with --resume"
# stopped after a mid-epoch checkpoint of a later epoch: the resume starts there, not at the last finished epoch
LATER_EPOCH_PART_KEPT = "a checkpoint part way through epoch {epoch} is kept: continue with --resume"


def kept_when_stopped(command: str, stop: BaseException) -> str:
    """What a command stopped by ``stop`` (KeyboardInterrupt, Terminated) leaves, as its last line says. A training run
    says what ``train`` recorded on ``stop`` (``epochs_kept``: the epochs its checkpoint holds, ``steps_kept`` the
    batches of the next one; absent: stopped before it wrote anything)."""
    if command == "train":
        epochs = getattr(stop, "epochs_kept", None)
        if epochs is None:
            return NOTHING_WRITTEN
        if not getattr(stop, "steps_kept", 0):
            return KEPT_WHEN_STOPPED["train"] if epochs else NO_EPOCH_FINISHED
        return LATER_EPOCH_PART_KEPT.format(epoch=epochs + 1) if epochs else FIRST_EPOCH_PART_KEPT
    return KEPT_WHEN_STOPPED.get(command, NOTHING_WRITTEN)


def says_when_stopped(command: str) -> bool:
    """Whether this process says the last line of ``command`` stopped by Ctrl-C or SIGTERM (``kept_when_stopped``):
    under torchrun, a training run's rank 0 alone. Only it decides and records the mid-epoch checkpoints (the others
    know of the epoch ends only), so another rank stopped after one in the first epoch would say that no epoch had
    finished (start again with --overwrite) while rank 0 says the checkpoint can be resumed."""
    return command != "train" or os.environ.get("RANK", "0") == "0"


# Commands on which --dataset does something: training reads <root>/<dataset>/training, evaluation its testing/.
# (demo makes its own data; calibrate and detect read the footage they are given.)
DATASET_COMMANDS = ("train", "evaluate")


class APIDefault:
    """An option's default that lives in the API (a dataclass field, a function's keyword or a constant), read only when
    it is needed: when --help shows it, or never (a command passes the API only the options given, ``given``). Building
    the parser so imports no torch, and the value lives in one place."""

    def __init__(self, module: str, owner: str | None, name: str) -> None:
        self.module, self.owner, self.name = module, owner, name

    @property
    def value(self) -> Any:
        import dataclasses
        import importlib
        import inspect

        module = importlib.import_module(self.module)
        if self.owner is None:
            return getattr(module, self.name)
        owner = getattr(module, self.owner)
        if dataclasses.is_dataclass(owner):
            field = next(f for f in dataclasses.fields(owner) if f.name == self.name)
            return field.default
        return inspect.signature(owner).parameters[self.name].default

    def __str__(self) -> str:  # argparse's %(default)s
        return str(self.value)


# the API's homes of the options' defaults (detect's options, its sources', calibrate's, the figures')
from_detect = functools.partial(APIDefault, "mnad.detect", "DetectOptions")
from_source = functools.partial(APIDefault, "mnad.data.streams", "SourceOptions")
from_calibrate = functools.partial(APIDefault, "mnad.calibrate", "calibrate_checkpoint")  # what `mnad calibrate` runs
from_figures = functools.partial(APIDefault, "mnad.figures", "memory_figures")


def given(args: argparse.Namespace, *names: str, **renamed: str) -> dict[str, Any]:
    """The options among ``names`` (and ``renamed``: option dest = the API's name) that the command line gave, by the
    API's names: what is left out takes the API's default."""
    pairs = [(name, name) for name in names] + list(renamed.items())
    return {api: getattr(args, dest) for dest, api in pairs if not isinstance(getattr(args, dest), APIDefault)}


def add_config_options(parser: argparse.ArgumentParser, *, model_options: bool, dataset: bool | None = None) -> None:
    """The options that set config fields. ``model_options``: the training ones too (else the scoring ones);
    ``dataset``: offer --dataset (default: on the commands in DATASET_COMMANDS)."""
    group = parser.add_argument_group("config overrides")
    names = list(OPTION_FIELDS) if model_options else ["alpha", "gamma", "normalization", "smoothing", "device", "threads", "dataset"]
    if not (parser.prog.split()[-1] in DATASET_COMMANDS if dataset is None else dataset):
        names.remove("dataset")
    for name in names:
        if not model_options and name in SCORING_OPTION_HELP:
            text = SCORING_OPTION_HELP[name]
        else:
            text = f"{OPTION_HELP[name]} ({OPTION_FIELDS[name]})"
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, help=text)
    flags = FLAG_FIELDS if model_options else SCORING_FLAG_FIELDS
    flag_help = FLAG_HELP if model_options else SCORING_FLAG_HELP
    for name, target in flags.items():
        value = "false" if name.startswith("no_") else "true"
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, action="store_true", help=f"{flag_help[name]} ({target} = {value})")
    if not model_options:
        group.add_argument("--fp32", action="store_true", help="score in fp32 where bf16 is native too (there the default is "
                                                               "bf16 + channels_last; elsewhere it is fp32)")
    parser.set_defaults(flag_fields=flags)
    group.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                       help="any other config field, e.g. --set model.update_max_over=assigned (repeatable)")


def option_assignments(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The config fields the command line sets, in the order they are applied (--set last: it wins), each as (the
    option as the user typed it, ``section.field=value``)."""
    pairs = [(f"--{name.replace('_', '-')}", f"{field}={getattr(args, name)}") for name, field in
             {"holdout": "train.holdout", **OPTION_FIELDS}.items() if getattr(args, name, None) is not None]
    for name, field in getattr(args, "flag_fields", {}).items():
        if getattr(args, name, False):
            pairs.append((f"--{name.replace('_', '-')}", f"{field}={'false' if name.startswith('no_') else 'true'}"))
    return pairs + [(f"--set {text}", text) for text in args.overrides]


def override_as_given(config: Config, pairs: list[tuple[str, str]]) -> Config:
    """``config`` with the (option, assignment) ``pairs`` applied together; a refused value is reported as
    ``--option: ...``, naming the option the user typed (was: ``overrides: train.holdout ...`` for --holdout 1)."""
    try:
        return config.override([text for _, text in pairs])
    except ConfigError as exc:
        refused = exc
    # applied one at a time (to the same end, so one of them fails) to find the option at fault; together first, as
    # fields checked against each other (model.memory_size and model.memory) may pass only once all are set
    for option, text in pairs:
        config = config.override([text], source=option)
    raise refused


def apply_options(config: Config, args: argparse.Namespace) -> Config:
    # --threads (train.threads) is applied by the API entry the config goes to (mnad.threads.apply_threads)
    return override_as_given(config, option_assignments(args))


def choose_scoring_path(model: Any, config: Config, args: argparse.Namespace) -> Config:
    """The scoring commands' numeric path (mnad.precision.scoring_path: bf16 + channels_last where bf16 is native,
    else fp32; --fp32 and the user's own eval.bf16 / eval.channels_last win), said in one line on standard error."""
    import torch

    from mnad.precision import scoring_path

    if not isinstance(model, torch.nn.Module):  # an exported .onnx: ONNX Runtime scores it in fp32
        line = f"ONNX Runtime, {'int8 convolutions' if getattr(model, 'int8', None) else 'fp32'} (an exported model)"
    else:
        explicit = {field for name, field in args.flag_fields.items() if getattr(args, name, False)}
        explicit |= {text.partition("=")[0].strip() for text in args.overrides}
        path = scoring_path(config, config.train.device, fp32=args.fp32, explicit=explicit)
        config, line = path.apply(config), path.describe()
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks
        print(f"mnad: scoring path: {line}", file=sys.stderr)
    return config


def load_scoring_model(args: argparse.Namespace) -> tuple[Any, Config]:
    """evaluate's and detect's model (--checkpoint: a model file, run folder, shipped name or exported .onnx; with
    --int8 an int8 export only) and its config, with the command's options, on its scoring path."""
    from mnad.detect import load_detector

    # an export's ONNX Runtime session takes --threads (train.threads) when it is built: the options are applied first
    model, config = load_detector(args.checkpoint, threads=lambda own: apply_options(own, args).train.threads)
    if args.int8:
        from mnad.quantize import check_int8

        check_int8(model, args.checkpoint)
    return model, choose_scoring_path(model, apply_options(config, args), args)


def cmd_train(args: argparse.Namespace) -> None:
    from mnad.train import train_run

    # the user's options last, --holdout among them (train.holdout): they win; own footage: docs/detect.md
    options = functools.partial(apply_options, args=args)
    config = own_footage_config(load_config(args.recipe), options) if args.data else options(load_config(args.recipe))
    if not args.data and not config.dataset:  # was: the root's videos trained on as own footage, without its hold-out
        # and scoring (own_footage_config), exit 0
        raise ConfigError(f"--data-root {args.data_root}: a data root holds datasets' layouts (<root>/<dataset>/training) and "
                          "no dataset is named (the recipe's dataset, --dataset); name one, or train on own footage with --data")
    run = train_run(config, args.data or args.data_root, args.out, resume=args.resume, overwrite=args.overwrite,
                    progress=not args.quiet)
    if _other_rank():
        return
    if run.untouched:  # a finished run: train leaves it as it is
        print(f"{args.out}: the run there is finished, nothing to resume; its model is left as it is ({run.model_path})")
        return
    print(f"model written to {run.model_path}")


def _other_rank() -> bool:
    """Under torchrun, a rank other than 0: it has done its share of the work; rank 0 prints and writes."""
    from mnad.distributed import is_main_process

    return not is_main_process()


def cmd_evaluate(args: argparse.Namespace) -> None:
    from mnad.evaluate import evaluate
    from mnad.outputs import check_evaluation_output
    from mnad.report.build import check_report_output

    top_k = given(args, "top_k")
    if top_k and not args.report:
        raise ConfigError("--top-k applies to --report only (the thumbnails of the report)")
    if top_k:  # create_report's own check, before the scoring (create_report runs after it)
        from mnad.report.build import check_top_k

        check_top_k(top_k["top_k"])
    out = args.out or args.report  # a report needs saved scores: without --out they go into the report folder
    # before the model is loaded and the scoring, which takes minutes to hours (the API checks again)
    if out:
        check_evaluation_output(out, overwrite=args.overwrite, option="--out" if args.out else "--report")
    if args.report:
        check_report_output(args.report, overwrite=args.overwrite)
    model, config = load_scoring_model(args)
    metrics = evaluate(model, config, args.data_root, labels_path=args.labels, out_dir=out, device=config.train.device,
                       progress=not args.quiet, fps=args.fps, overwrite=args.overwrite, checkpoint=args.checkpoint,
                       **given(args, "protocol"))
    if _other_rank():
        return
    print_metrics(metrics)
    if out:
        print(f"scores and metrics written to {out}")
    if args.report:
        from mnad.report import create_report

        command = "mnad " + shlex.join(getattr(args, "argv", None) or sys.argv[1:])
        page = create_report(model, config, args.data_root, out, args.report, checkpoint=args.checkpoint, labels=args.labels,
                             command=command, device=config.train.device, overwrite=args.overwrite, **top_k)
        print(f"report written to {page}")


def cmd_report(args: argparse.Namespace) -> None:
    from mnad.report import rebuild_report

    print(f"report written to {rebuild_report(args.path, out=args.out, overwrite=args.overwrite)}")


def cmd_figures(args: argparse.Namespace) -> None:
    from mnad.checkpoint import load_model
    from mnad.figures import check_figures_output, memory_figures, model_label

    check_figures_output(args.out, overwrite=args.overwrite)  # before the models are loaded (the API checks again)
    model, config = load_model(args.checkpoint)
    config = apply_options(config, args)
    compare, labels = None, None
    if args.compare_checkpoint:
        compare, compare_config = load_model(args.compare_checkpoint)
        labels = (model_label(config, "model"), model_label(compare_config, "compared model"))
    record = memory_figures(model, config, args.data_root, args.out, compare, labels=labels, device=config.train.device,
                            overwrite=args.overwrite, **given(args, "frames", "clips", queries="max_queries", figures_seed="seed"))
    for entry in record["models"]:
        print(f"{entry['label']}: mean max matching probability {entry['mean_max_probability']:.3f}, "
              f"{entry['items_used']} of {len(entry['item_usage'])} items nearest to some query")
    print(f"figures written to {args.out}")


def print_metrics(metrics: dict) -> None:
    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.2f}%"

    # the macro AUC leaves out the videos of one class (no AUC: Ped2's 08-11 are abnormal throughout): say how many
    in_macro = metrics.get("videos_in_macro", len(metrics["per_video_auc"]))
    over = f" over {in_macro} of {metrics['videos']} videos" if in_macro != metrics["videos"] else ""
    print(f"frame-level AUC: micro {pct(metrics['micro_auc'])}, macro {pct(metrics['macro_auc'])}{over} "
          f"({metrics['frames_scored']} frames of {metrics['videos']} videos, {metrics['abnormal_frames']} abnormal)")
    if over:
        print(f"  ({metrics['videos'] - in_macro} videos are all normal or all abnormal: they have no AUC of their own "
              "and count in the micro AUC only)")
    for name, auc in metrics["per_video_auc"].items():
        print(f"  video {name}: {pct(auc)}")
    print(f"note: {metrics['note']}")
    if metrics.get("stream"):
        print_stream_metrics(metrics["stream"])


def print_stream_metrics(stream: dict) -> None:
    """The stream protocol's results (``evaluate.stream_metrics``), a few lines: the realised false-alarm and detection
    rates at each calibrated threshold, the events against the labels and the delays (metrics.json has them all)."""
    from mnad.outputs import shown_score

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.2f}%"

    def num(value: float | None, digits: int = 2) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    def shown(value: float | None) -> str:  # a threshold as the report and the annotated video show it
        return "n/a" if value is None else shown_score(value)

    print("stream protocol (one causal stream, thresholds from the calibration, not from these labels):")
    for target, entry in stream["at_false_alarm_rate"].items():
        if entry.get("not_estimable"):
            print(f"  false-alarm rate {target}: not estimable ({entry['not_estimable']})")
        else:
            print(f"  false-alarm rate {target}: threshold {shown(entry['threshold'])}, realised false-alarm rate "
                  f"{pct(entry['false_alarm_rate'])}, detection rate {pct(entry['detection_rate'])}")
    events = stream["event_measures"]
    per_minute = events["false_events_per_minute"]
    print(f"  events (threshold {shown(stream['event_threshold'])}, at least {stream['min_event_frames']} frames): "
          f"{events['events']}, {events['false_events']} false ({num(per_minute)} per minute of normal footage); "
          f"anomalies caught {events['anomalies_caught']} of {events['anomalies']}, videos {events['videos_caught']} of "
          f"{events['videos_with_anomaly']}")
    rate = "each video's own rate" if events.get("video_fps") else f"{events['fps']:g} fps"
    source = f": {stream['fps_source']}" if stream.get("fps_source") else ""
    print(f"  mean delay from an anomaly's first frame: {num(events.get('mean_alert_delay_frames'), 1)} frames to the "
          f"alert, {num(events['mean_delay_frames'], 1)} to the start of its event (at {rate}{source})")


def cmd_demo(args: argparse.Namespace) -> None:
    """Generate the synthetic scene, train a small model on it and evaluate it: nothing to download (mnad.demo)."""
    from mnad.demo import RECIPE, demo

    result = demo(args.out, config=apply_options(load_config(RECIPE), args), overwrite=args.overwrite, progress=not args.quiet)
    print_metrics(result.metrics)
    print(f"synthetic scene: {result.data_root / 'synthetic'}")
    print(f"run folder: {result.run_dir}")


def cmd_calibrate(args: argparse.Namespace) -> None:
    from mnad.calibrate import calibrate_checkpoint, describe_scoring

    result = calibrate_checkpoint(
        args.checkpoint, args.out, data=args.data,
        configure=lambda model, own: choose_scoring_path(model, apply_options(own, args), args),
        keep_smoothing=args.smoothing is not None, overwrite=args.overwrite, progress=not args.quiet,
        **given(args, "false_alarm_rate", "scoring"))
    print(json.dumps(result.config.eval.calibration, indent=2))  # as written
    print(f"mnad: scoring: {describe_scoring(result.calibration)}", file=sys.stderr)
    print(f"calibrated model written to {args.out}")


def cmd_detect(args: argparse.Namespace) -> None:
    from mnad.data.streams import SourceOptions
    from mnad.detect import DetectOptions, detect

    model, config = load_scoring_model(args)
    # the normalisation the user asked for (--normalization, or --set eval.normalization, which wins: the config's value),
    # else None: the model's config always carries one, which the API cannot tell from an asked one
    asked = args.normalization is not None or any(o.partition("=")[0].strip() == "eval.normalization" for o in args.overrides)
    options = DetectOptions(
        normalization=config.eval.normalization if asked else None,
        save_video=args.save_video, save_maps=args.save_maps, max_frames=args.max_frames, overwrite=args.overwrite,
        resume=args.resume,
        source=SourceOptions(**given(args, "fps", "reconnects", "open_timeout", "read_timeout")),
        **given(args, "region_sigma", "hysteresis", "min_event_frames", "video_segment", "video_keep",
                 "rows_segment", "rows_keep", "maps_keep"),
    )
    summary = detect(model, config, args.source, args.out, options, device=config.train.device, progress=not args.quiet)
    print(json.dumps(summary, indent=2))


def cmd_export(args: argparse.Namespace) -> None:
    from mnad.checkpoint import load_model
    from mnad.data import split_videos
    from mnad.export import check_export_output, export_onnx

    check_export_output(args.out, overwrite=args.overwrite)  # before the model is loaded (the API checks again)
    model, config = load_model(args.checkpoint)
    if args.calibration_data:  # normal footage, as `mnad calibrate --data` takes it
        videos = args.calibration_data  # paths: export_onnx opens them (calibrate.open_footage)
    else:
        videos = split_videos(args.data_root, config.dataset, "training", config.model.pixel_range) if args.data_root else []
    path = export_onnx(model, config, args.out, int8=args.int8, calibration=videos, overwrite=args.overwrite,
                       **given(args, "calibration_clips"))
    kind = "int8 (convolutions quantised)" if args.int8 else "fp32"
    print(f"ONNX scoring model, {kind}, written to {path} (config, memory items and provenance in {path}.json)")


def cmd_recipes(args: argparse.Namespace) -> None:
    import re
    from importlib import resources

    names = recipe_names()
    width = max(map(len, names), default=0)
    for name in names:
        if args.show:  # "# name", then the config as JSON: a format scripts read
            print(f"# {name}\n{json.dumps(load_config(name).to_dict(), indent=2)}")
            continue
        # what the recipe is for: the first sentence of the comment that opens its TOML file
        lines = (resources.files("mnad.configs") / f"{name}.toml").read_text(encoding="utf-8").splitlines()
        comment = " ".join(line.lstrip("#").strip() for line in itertools.takewhile(lambda s: s.startswith("#"), lines))
        description = re.split(r"(?<!\bSec\.)(?<!\bFig\.)(?<!\bEq\.)(?<!e\.g\.)(?<!i\.e\.)(?<=\.)\s+", comment, maxsplit=1)[0]
        print(f"{name:<{width}}  {description or '(no description)'}")


def _version() -> str:
    """The installed package's version (its metadata), else mnad.__version__ (a source tree on sys.path)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mnad")
    except PackageNotFoundError:
        import mnad

        return getattr(mnad, "__version__", "unknown")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mnad", description="Memory-guided normality for video anomaly detection")
    parser.add_argument("--version", action="version", version=f"mnad {_version()}", help="print the version of mnad and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help="what to do (mnad COMMAND --help for its options)")

    p = sub.add_parser("train", help="train a model on the normal (training) videos of a dataset")
    p.add_argument("--recipe", default="ped2_pred", help=f"recipe name or TOML file ({', '.join(recipe_names())})")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-root", help="folder holding <dataset>/training (benchmark layouts)")
    source.add_argument("--data", help="own footage: a folder of normal video files and/or frame folders")
    p.add_argument("--holdout", type=float, help="fraction of each training video (its tail) kept out of training, for "
                   f"calibration (train.holdout; default {DEFAULT_HOLDOUT} with --data unless train.holdout_videos keeps whole "
                   "videos out instead, else 0)")
    p.add_argument("--out", required=True, help="run folder: checkpoints, config, log")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint (an error if it has none)")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --out (kept in --out/.mnad-train-earlier "
                   "until the new run has its model, then deleted)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_options(p, model_options=True)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="score the test videos and compute frame-level AUC")
    p.add_argument("--checkpoint", required=True, help="model file, run folder, or shipped model name (./NAME for a local folder of that name)")
    p.add_argument("--data-root", required=True, help="folder holding <dataset>/testing")
    p.add_argument("--labels", help="label file (.npy, .csv, UCSD .m); found beside the dataset if not given")
    p.add_argument("--out", help="folder for scores.csv and metrics.json")
    p.add_argument("--report", metavar="DIR", help="also write an HTML report (plots, localisation, provenance) to DIR")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier evaluation in --out and report in --report "
                   "(each file once its new one is written)")
    p.add_argument("--top-k", type=int, default=APIDefault("mnad.report.build", "create_report", "top_k"),
                   help="with --report: localisation thumbnails of this many top-scoring frames (default %(default)s)")
    p.add_argument("--protocol", choices=["published", "stream"], default=APIDefault("mnad.evaluate", "evaluate", "protocol"),
                   help="published: per-video min-max, the paper's tables (looks at the whole video); stream: the test videos as one "
                        "causal stream scored by a calibrated model, with realised false-alarm rates and events (default %(default)s)")
    p.add_argument("--fps", type=float, help="with --protocol stream: the footage's frame rate (default: a video file's own, "
                   "as its container reports it; else the dataset's, Ped2 10, or 25)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--int8", action="store_true", help="insist on int8 scoring: the checkpoint must be an int8 ONNX export "
                   "(`mnad export --int8`), anything else is refused")
    add_config_options(p, model_options=False)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("report", help="rebuild the HTML report of an evaluation from its saved outputs (no scoring)")
    p.add_argument("path", help="report folder, evaluation folder (metrics.json, scores.csv), or a run folder holding one")
    p.add_argument("--out", help="folder for report.html (default: the report folder, whose page is always redrawn)")
    p.add_argument("--overwrite", action="store_true", help="replace a report.html already in --out")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("figures", help="the paper's memory figures: matching probabilities (Fig. 5) and t-SNE (Figs. 1, 6)")
    p.add_argument("--checkpoint", required=True, help="model file, run folder, or shipped model name (./NAME for a local folder of that name)")
    p.add_argument("--data-root", required=True, help="folder holding <dataset>/testing (else its training videos are used)")
    p.add_argument("--out", required=True, help="folder for matching.png, tsne.png, figures.json")
    p.add_argument("--overwrite", action="store_true", help="replace the figures already in --out (once the new ones are drawn)")
    p.add_argument("--compare-checkpoint", help="a second model drawn beside the first (e.g. trained with lambda_separate=0)")
    p.add_argument("--frames", type=int, default=from_figures("frames"), help="frames shown in the matching figure (default %(default)s)")
    p.add_argument("--clips", type=int, default=from_figures("clips"),
                   help="clips, spread over the videos, whose queries are used (default %(default)s)")
    p.add_argument("--queries", type=int, default=from_figures("max_queries"), help="queries sampled for the t-SNE (default %(default)s)")
    p.add_argument("--seed", dest="figures_seed", type=int, default=from_figures("seed"),
                   help="seed of the query sample and the t-SNE (default %(default)s)")
    p.add_argument("--device", default=None, help="device the model runs on: cpu, cuda or cuda:N")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="a field of the model's config, e.g. --set dataset=avenue to find the videos (repeatable)")
    p.set_defaults(func=cmd_figures)

    p = sub.add_parser("demo", help="train and evaluate on a generated scene (no download, about a minute on 2 CPU cores)")
    p.add_argument("--out", help="folder for the generated data and the run (default: a temporary folder)")
    p.add_argument("--overwrite", action="store_true", help="replace the demo run already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_options(p, model_options=True)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("calibrate", help="fit score normalisation and alert threshold on normal footage (no labels)")
    p.add_argument("--checkpoint", required=True, help="model file, run folder, or shipped model name (./NAME for a local folder of that name)")
    p.add_argument("--data", nargs="*", help="normal footage: video files, frame folders or folders of them (default: the run's held-out part)")
    p.add_argument("--false-alarm-rate", type=float, default=from_calibrate("false_alarm_rate"),
                   help="fraction of normal frames allowed to alert (default %(default)s)")
    p.add_argument("--scoring", choices=["choose", "config"], default=from_calibrate("scoring"),
                   help="choose: pick the terms of S_t (and, without --smoothing, the trailing mean) that best separate "
                   "pseudo-anomalies made from the footage (docs/method.md 9.2); config: score as the model's config says "
                   "(default %(default)s)")
    p.add_argument("--out", required=True, help="calibrated model file to write (.safetensors)")
    p.add_argument("--overwrite", action="store_true", help="replace the file already at --out (once the new one is written)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_options(p, model_options=False)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("detect", help="score footage as it arrives: file, frame folder, glob, camera index or URL")
    p.add_argument("source", nargs="+", help="video file, frame folder, glob ('frames/*.jpg'), camera index (0) or rtsp:// / "
                   "http:// URL; several: scored at once, batched, each in its own folder under --out")
    p.add_argument("--checkpoint", required=True, help="a calibrated model gives alerts and events (mnad calibrate)")
    p.add_argument("--out", required=True, help="folder for scores.csv, events.jsonl, events.csv, summary.json "
                   "(several sources: one folder per source, <index>_<name>, and the run's summary.json)")
    p.add_argument("--save-video", action="store_true", help="write annotated.mkv (a longer run: annotated/<first frame>.mkv, "
                   "files of --video-segment seconds): heatmap overlay, regions, score timeline")
    p.add_argument("--video-segment", type=float, default=from_detect("video_segment"), metavar="SECONDS",
                   help="with --save-video: seconds of video per file; a killed run loses at most the open one's "
                   "unwritten tail (default %(default)s)")
    p.add_argument("--video-keep", type=float, default=from_detect("video_keep"), metavar="GIB",
                   help="with --save-video: when a file closes, delete the oldest closed files until those kept total at "
                   "most GIB GiB, the newest always kept; for each source (default: keep every file)")
    p.add_argument("--rows-segment", type=float, default=from_detect("rows_segment"), metavar="SECONDS",
                   help="seconds of footage per segment of scores.csv, events.jsonl and events.csv; a longer run writes "
                   "them into rows/<first frame>/ each (default %(default)s: a day)")
    p.add_argument("--rows-keep", type=float, default=from_detect("rows_keep"), metavar="GIB",
                   help="when a row segment closes, delete the oldest closed ones until those kept total at most GIB GiB, "
                   "the newest always kept; for each source (default: keep every segment)")
    p.add_argument("--save-maps", choices=["npy", "png"], help="write each frame's error map")
    p.add_argument("--maps-keep", type=float, default=from_detect("maps_keep"), metavar="GIB",
                   help="with --save-maps: when a map shard (maps/<8 digits>/, 10,000 maps) closes, delete the oldest "
                   "closed ones until those kept total at most GIB GiB, the newest always kept; for each source (default: keep every map)")
    p.add_argument("--region-sigma", type=float, default=from_detect("region_sigma"), help="with --save-video: the video marks regions above mean + "
                   "SIGMA * std of the error (default %(default)s: the mean)")
    p.add_argument("--fps", type=float, default=from_source("fps"), help="frame rate of frame folders and globs (default "
                   "%(default)s; video files and streams give their own)")
    p.add_argument("--reconnects", type=int, default=from_source("reconnects"),
                   help="times to reopen a live source that fails or stalls (default %(default)s)")
    p.add_argument("--open-timeout", type=float, default=from_source("open_timeout"),
                   help="seconds a live source may take to open (default %(default)s)")
    p.add_argument("--read-timeout", type=float, default=from_source("read_timeout"), help="seconds a live source may stay silent before it "
                   "counts as stalled (default %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier run in --out")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (killed or stopped) with the same sources and "
                   "model: memory, normaliser, frame numbers and counts carry on, new rows follow the earlier ones (an "
                   "error if --out holds no run to continue)")
    p.add_argument("--max-frames", type=int, help="end each source once its first MAX_FRAMES frames are scored")
    p.add_argument("--hysteresis", type=float, default=from_detect("hysteresis"), help="an event ends when the score falls this far below "
                   "the threshold (default %(default)s)")
    p.add_argument("--min-event-frames", type=int, default=from_detect("min_event_frames"),
                   help="events shorter than this many frames are dropped (default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--int8", action="store_true", help="insist on int8 scoring: the checkpoint must be an int8 ONNX export "
                   "(`mnad export --int8`), anything else is refused")
    add_config_options(p, model_options=False)
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("export", help="export the scoring step (memory as explicit input/output) to ONNX")
    p.add_argument("--checkpoint", required=True, help="model file, run folder, or shipped model name (./NAME for a local folder of that name)")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--out", required=True, help="file to write (.onnx, and its sidecar .onnx.json)")
    p.add_argument("--overwrite", action="store_true", help="replace the export already at --out (once the new one is written)")
    p.add_argument("--int8", action="store_true", help="quantise the U-Net's convolutions to int8 (ONNX Runtime, static), calibrated "
                   "on normal training frames (--data-root or --calibration-data); the memory maths and scores stay fp32")
    footage = p.add_mutually_exclusive_group()
    footage.add_argument("--data-root", help="with --int8: calibrate on the training videos of the model's dataset under this folder")
    footage.add_argument("--calibration-data", nargs="+", metavar="PATH",
                         help="with --int8: normal footage to calibrate on: video files, frame folders or folders of them")
    p.add_argument("--calibration-clips", type=int, metavar="N", default=APIDefault("mnad.quantize", None, "CALIBRATION_CLIPS"),
                   help="with --int8: clips, spread evenly over the footage, whose activations set the int8 ranges (default %(default)s)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("recipes", help="list the named recipes")
    p.add_argument("--show", action="store_true", help="print each recipe's full config")
    p.set_defaults(func=cmd_recipes)
    return parser


def _say(line: str, **once: Any) -> None:
    """``line`` on standard error, once per torchrun job (the first rank to say it; ``once``: the options of
    mnad.distributed.first_to_say); torch is imported for that only under a multi-process launch."""
    if multi_process_launch():
        from mnad.distributed import first_to_say

        if not first_to_say(line, **once):
            return
    print(line, file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors the ranks of a torchrun job say once."""

    def error(self, message: str) -> NoReturn:
        if multi_process_launch():
            from mnad.distributed import first_to_say

            if not first_to_say(f"{self.prog}: error: {message}", error=True):
                self.exit(2)
        super().error(message)


class _Warnings(logging.Handler):
    """The package's warnings as one `mnad: warning: ...` line each on standard error."""

    def emit(self, record: logging.LogRecord) -> None:
        _say(f"mnad: warning: {printable(record.getMessage())}")


def _show_warnings() -> None:
    logger = logging.getLogger("mnad")
    if not any(isinstance(h, _Warnings) for h in logger.handlers):
        logger.addHandler(_Warnings(logging.WARNING))
        logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command line, for reports' provenance
    _show_warnings()
    previous = raise_terminated_on_signals()
    try:
        from mnad.outputs import output_path

        for option in ("out", "report"):  # before any work (loading a model), as the API checks them again
            if getattr(args, option, None) is not None:
                output_path(getattr(args, option), f"--{option}")
        args.func(args)
    except MNADError as exc:
        _say(f"mnad: error: {printable(str(exc))}", error=True)
        return 2
    except KeyboardInterrupt as stop:  # under torchrun, not after another rank's error: torchrun interrupts the others then
        if says_when_stopped(args.command):
            _say(f"mnad: interrupted ({kept_when_stopped(args.command, stop)})", unless_failed=True)
        return 130
    except Terminated as stop:
        by = "" if stop.signal == "SIGTERM" else f"{stop.signal}: "  # SIGHUP: the terminal or ssh connection closed
        if says_when_stopped(args.command):
            _say(f"mnad: terminated ({by}{kept_when_stopped(args.command, stop)})", unless_failed=True)
        return 143
    except RuntimeError as exc:  # torch.distributed losing a rank: one line, not a traceback; any other is a bug
        if not multi_process_launch():
            raise
        from mnad.distributed import lost_peer

        if (text := lost_peer(exc)) is None:
            raise
        _say(f"mnad: error: {printable(text)}", key="lost peer", error=True, unless_failed=True)
        return 2
    finally:
        restore_handlers(previous)
        if "mnad.distributed" in sys.modules:  # a torchrun job: leave the process group that train/evaluate joined
            sys.modules["mnad.distributed"].cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
