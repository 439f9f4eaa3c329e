"""The demo: generate the synthetic scene, train a small model on it and evaluate it, with nothing to download.

``mnad demo`` is this function's command::

    from mnad.demo import demo

    result = demo("runs/demo")          # or demo() for a temporary folder
    print(result.metrics["micro_auc"], result.run_dir)
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mnad.config import Config, load_config
from mnad.errors import ConfigError, DataError, os_reason
from mnad.launch import single_process

RECIPE = "synthetic_pred"
SCENE_SIZE = 64  # pixels: the scene is drawn at this size and trained on as the recipe says


@dataclass(frozen=True)
class DemoResult:
    """What a demo made: the scene (a data root holding ``synthetic/``), the run folder and its evaluation."""

    data_root: Path
    run_dir: Path
    model_path: Path
    metrics: dict


def demo(out: str | Path | None = None, *, config: Config | None = None, overwrite: bool = False,
         progress: bool = True) -> DemoResult:
    """Generate the scene into ``out/data``, train ``config`` (default: the ``synthetic_pred`` recipe; its
    ``train.seed`` seeds the scene too) into ``out/run`` and evaluate it into ``out/run/eval``. ``out`` None: a new
    temporary folder (kept: the result names it). ``overwrite``: replace a demo run already in ``out``.

    Everything is checked before anything is written: the config, the folder, an earlier demo run there (its scene is
    not drawn again under it unless ``overwrite`` replaces the run) and what training checks before it reads a frame
    (epochs, device, one batch of the scene's clips)."""
    single_process("mnad demo")  # every rank would write the same scene and run
    from mnad.checkpoint import load_model
    from mnad.data.synthetic import make_synthetic_dataset, training_lengths
    from mnad.evaluate import evaluate
    from mnad.outputs import check_evaluation_output, check_output_folder
    from mnad.run_folder import check_run_folder
    from mnad.train import check_planned_training, train

    config = load_config(RECIPE) if config is None else config
    if not isinstance(config, Config):
        raise ConfigError(f"demo(): config must be a mnad.config.Config (load_config({RECIPE!r}) gives one), got "
                          f"{type(config).__name__}")
    config.validate("config")
    if config.dataset != "synthetic":  # the demo trains on the scene it draws: another dataset's videos are not there
        raise ConfigError(f"demo(): config.dataset must be 'synthetic' (the demo's scene), got {config.dataset!r}")
    if out is not None:
        check_output_folder(out)  # a file in its place, or an unwritable folder
        check_run_folder(Path(out) / "run", resume=False, overwrite=overwrite)
        # its evaluation goes into the run it makes (run/eval): one there is the earlier run's, which overwrite replaces
        check_evaluation_output(Path(out) / "run" / "eval", overwrite=overwrite)
    check_planned_training(config, training_lengths(), Path(out) / "data" if out is not None else "the demo's scene")
    if out is None:
        try:
            folder = Path(tempfile.mkdtemp(prefix="mnad-demo-"))
        except OSError as exc:
            raise DataError(f"{tempfile.gettempdir()}: cannot make the demo's folder there ({os_reason(exc)}); "
                            "set TMPDIR or pass --out") from exc
    else:
        folder = Path(out)
    try:
        root = make_synthetic_dataset(folder / "data", size=SCENE_SIZE, seed=config.train.seed).parent
        model_path = train(config, root, folder / "run", overwrite=overwrite, progress=progress)
        model, trained = load_model(model_path)
        metrics = evaluate(model, trained, root, out_dir=folder / "run" / "eval", overwrite=overwrite, progress=progress,
                           checkpoint=model_path)
    except BaseException:
        # a temporary folder is named only by the result: one that failed (or was stopped) would be left unnamed.
        # An out folder keeps what the run wrote (a stopped training resumes there; the scene removes itself)
        if out is None:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return DemoResult(data_root=root, run_dir=folder / "run", model_path=model_path, metrics=metrics)
