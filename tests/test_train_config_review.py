"""`mnad train`'s settings from a user's side (a review): a value of the wrong type set by hand in Python, a whole
section assigned by an override, a thread count no machine has, numbers as Python writes them."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from conftest import tiny_config

from mnad.cli import main
from mnad.config import MAX_THREADS, Config, checked_config, load_config, own_footage_config
from mnad.errors import ConfigError
from mnad.train import train

WRONG_TYPES = [
    ("train", "epochs", "2"), ("train", "epochs", 1.5), ("train", "batch_size", 2.5), ("train", "lr", "0.001"),
    ("train", "seed", 1.0), ("train", "threads", 1.0), ("train", "bf16", 1), ("train", "checkpoint_minutes", None),
    ("train", "holdout", "0.1"), ("train", "holdout_videos", "01"), ("train", "lambda_compact", [1]),
    ("train", "device", 0), ("model", "image_size", 32.0), ("model", "memory", "yes"), ("eval", "alpha", "0.6"),
    ("eval", "calibration", []), ("", "dataset", None),
]


@pytest.mark.parametrize(("section", "name", "value"), WRONG_TYPES, ids=[f"{s}.{n}={v!r}" for s, n, v in WRONG_TYPES])
def test_a_value_of_the_wrong_type_set_by_hand_is_one_config_error_before_anything_is_written(
        section: str, name: str, value: object, synthetic_root: Path, tmp_path: Path) -> None:
    # was: a TypeError or RuntimeError from inside training (train.epochs = "2": '<' not supported between str and
    # int), or after a whole epoch, from the checkpoint's config ("train.keep_epochs = 'yes'")
    config = tiny_config()
    setattr(getattr(config, section) if section else config, name, value)
    with pytest.raises(ConfigError, match=rf"config: {section + '.' if section else ''}{name} must be "):
        train(config, synthetic_root, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_a_section_replaced_by_hand_is_one_config_error() -> None:
    config = tiny_config()
    config.train = {"epochs": 1}  # type: ignore[assignment]
    with pytest.raises(ConfigError, match="train must be a TrainConfig"):
        checked_config(config)


def test_values_of_a_kin_type_are_taken_in_the_fields_own() -> None:
    """An int for a float field, a numpy integer for an int field, a tuple for a list field: taken, in the form a
    config file gives (a resume compares train.holdout_videos with the checkpoint's list)."""
    np = pytest.importorskip("numpy")
    config = tiny_config()
    config.train.lr, config.train.epochs, config.train.holdout_videos = 1, np.int64(3), ("01",)
    config.validate()
    assert (config.train.lr, config.train.epochs, config.train.holdout_videos) == (1.0, 3, ["01"])
    assert type(config.train.lr) is float and type(config.train.epochs) is int and type(config.train.holdout_videos) is list


@pytest.mark.parametrize("text", ["model={}", "train={epochs=1}", "eval={alpha=0.5}"])
def test_an_override_of_a_whole_section_is_refused(text: str) -> None:
    # was: the section's other fields silently back to their defaults (--set 'model={}' trained at 256x256, width 64,
    # whatever the recipe and the options before it said)
    with pytest.raises(ConfigError, match="is a section, not a field"):
        load_config("synthetic_pred").override(["model.image_size=32", text])


def test_a_calibration_table_is_still_a_field() -> None:
    config = Config().override(["eval.calibration={threshold=0.5}"])
    assert config.eval.calibration == {"threshold": 0.5}


def test_the_thread_count_has_a_ceiling() -> None:
    # was: accepted, and torch.set_num_threads(100000) killed the process at the first parallel operation
    # (a segmentation fault, or libgomp's abort: no mnad: error line)
    assert Config().override([f"train.threads={MAX_THREADS}"]).train.threads == MAX_THREADS
    with pytest.raises(ConfigError, match=f"train.threads must be at most {MAX_THREADS}, got 100000"):
        Config().override(["train.threads=100000"])


def test_the_cli_refuses_a_thread_count_in_one_line(synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--recipe", "synthetic_pred", "--data-root", str(synthetic_root), "--out", str(tmp_path / "run"),
                 "--quiet", "--threads", "100000"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"mnad: error: --threads: train.threads must be at most {MAX_THREADS}, got 100000"]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("text", "field", "expected"), [
    ("train.lr=.001", "lr", 0.001), ("train.lr=5.", "lr", 5.0), ("train.epochs=010", "epochs", 10),
    ("train.holdout=.25", "holdout", 0.25),
])
def test_numbers_as_python_writes_them_are_numbers(text: str, field: str, expected: float) -> None:
    # was: TOML refuses them, so they were taken as text: "--lr .001: lr must be float, got '.001'"
    value = getattr(Config().override([text]).train, field)
    assert value == expected and type(value) is type(expected)


def test_a_word_for_a_number_field_is_still_refused() -> None:
    with pytest.raises(ConfigError, match="lr must be float, got 'abc'"):
        Config().override(["train.lr=abc"])
    with pytest.raises(ConfigError, match="finite"):
        Config().override(["train.lr=infinity"])
    assert math.isclose(Config().override(["train.lr=2e-4"]).train.lr, 2e-4)



@pytest.mark.parametrize("option", [["--dataset", "synthetic"], ["--set", "dataset=synthetic"]])
def test_own_footage_with_a_dataset_is_one_error_line(option: list[str], synthetic_root: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # was: --data read as a data root, its synthetic/training split trained on as own footage (held out, scored on
    # patches), though own footage is every video in the folder whatever its names
    code = main(["train", "--recipe", "synthetic_pred", "--data", str(synthetic_root), "--out", str(tmp_path / "run"),
                 "--quiet", *option])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("mnad: error: dataset 'synthetic' (--dataset, --set dataset=...) "
                                                             "with own footage (--data)")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="with own footage"):
        own_footage_config(load_config("synthetic_pred"), lambda config: config.override(["dataset=synthetic"]))


def test_a_data_root_without_a_dataset_is_one_error_line(synthetic_root: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    # was: the root's frame folders trained on as own footage, without own footage's hold-out and scoring, exit 0
    code = main(["train", "--recipe", "synthetic_pred", "--data-root", str(synthetic_root / "synthetic" / "training" / "frames"),
                 "--out", str(tmp_path / "run"), "--quiet", "--dataset", ""])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no dataset is named" in err[0] and err[0].startswith("mnad: error: --data-root ")
    assert not (tmp_path / "run").exists()


def test_a_whole_number_past_a_floats_range_is_one_config_error() -> None:
    # was: float()'s OverflowError traceback (--lr 1000...0, 401 digits; or train.lr = 10**400 set by hand)
    with pytest.raises(ConfigError, match="lr must be a finite number"):
        Config().override(["train.lr=1" + "0" * 400])
    config = Config()
    config.train.lr = 10**400  # type: ignore[assignment]
    with pytest.raises(ConfigError, match="config: train.lr must be a finite number"):
        config.validate()


def test_a_number_of_more_digits_than_python_reads_is_one_config_error(tmp_path: Path) -> None:
    # was: tomllib's ValueError traceback ("Exceeds the limit (4300 digits) for integer string conversion"), from an
    # override and from a recipe file alike
    with pytest.raises(ConfigError, match=r"epochs must be int, got '1000") as caught:
        Config().override(["train.epochs=1" + "0" * 5000])
    assert len(str(caught.value)) < 200
    recipe = tmp_path / "big.toml"
    recipe.write_text("[train]\nepochs = 1" + "0" * 5000 + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"{recipe}: not valid TOML"):
        load_config(recipe)


def test_an_empty_recipe_name_or_a_folder_is_said_to_be_one(tmp_path: Path) -> None:
    # was: ".: recipe file not found" for --recipe '' (Path('') is the current folder), "DIR: recipe file not found" for a folder
    with pytest.raises(ConfigError, match="no recipe given"):
        load_config("")
    with pytest.raises(ConfigError, match=rf"{tmp_path}: a folder, not a recipe file"):
        load_config(tmp_path)
