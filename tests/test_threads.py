"""Sharing the cores and choosing the scoring path (issue #18): the command's OpenMP wait policy, and the numeric path
(bf16 + channels_last where bf16 is native, else fp32) that evaluate, calibrate and detect take and say."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_config

import mnad.precision as precision
from mnad.checkpoint import save_model
from mnad.cli import main
from mnad.config import Config
from mnad.errors import ConfigError
from mnad.model import MNAD

ROOT = Path(__file__).resolve().parents[1]


def run_python(args: list[str], **env: str) -> subprocess.CompletedProcess:
    """A fresh interpreter (torch's OpenMP runtime reads its environment once, as it loads) without the test's
    OMP_WAIT_POLICY, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_DISPLAY_ENV")}
    base["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH", "")) if p)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=base | env, cwd=ROOT, timeout=300)


@pytest.mark.parametrize(("user", "expected"), [(None, "PASSIVE"), ("active", "active")])
def test_the_command_sets_a_passive_wait_policy_before_torch_loads(user: str | None, expected: str) -> None:
    code = "import os, sys\nimport mnad.cli\nprint(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)"
    proc = run_python(["-c", code], **({"OMP_WAIT_POLICY": user} if user else {}))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [expected, "False"]  # the user's value wins; torch not loaded yet, so it takes effect


@pytest.mark.parametrize(("user", "policy", "spin"), [(None, "PASSIVE", "0"), ("ACTIVE", "ACTIVE", "30000000000")])
def test_torchs_openmp_runtime_runs_with_that_policy(user: str | None, policy: str, spin: str, tmp_path: Path) -> None:
    """End to end through `python -m mnad`: the OpenMP runtime that torch loads reports the policy it uses
    (OMP_DISPLAY_ENV; GNU OpenMP also shows its spin count: 0 is passive, unset would be 300000)."""
    env = {"OMP_DISPLAY_ENV": "verbose"} | ({"OMP_WAIT_POLICY": user} if user else {})
    proc = run_python(["-m", "mnad", "evaluate", "--checkpoint", str(tmp_path / "missing.safetensors"), "--data-root", str(tmp_path)], **env)
    assert proc.returncode == 2 and "mnad: error:" in proc.stderr  # the command ran (torch loaded) and failed cleanly
    if "OPENMP DISPLAY ENVIRONMENT" not in proc.stderr:
        pytest.skip("this torch's OpenMP runtime does not display its environment")
    assert f"OMP_WAIT_POLICY = '{policy}'" in proc.stderr
    if "GOMP_SPINCOUNT" in proc.stderr:
        assert f"GOMP_SPINCOUNT = '{spin}'" in proc.stderr


# ---- the scoring path --------------------------------------------------------------------------------------------


@pytest.fixture
def native(monkeypatch: pytest.MonkeyPatch):
    """Set whether bf16 is native on this machine: ``native(True)``."""
    def set_native(value: bool) -> None:
        monkeypatch.setattr(precision, "bf16_is_native", lambda device: value)
    return set_native


def test_bf16_and_channels_last_where_bf16_is_native(native) -> None:
    native(True)
    path = precision.scoring_path(Config(), "cpu")
    assert (path.bf16, path.channels_last) == (True, True)
    assert path.describe().startswith("bf16 + channels_last (this CPU runs bf16 natively")
    config = path.apply(Config())
    assert config.eval.bf16 and config.eval.channels_last


def test_fp32_where_bf16_would_be_emulated_even_if_the_recipe_asks(native) -> None:
    native(False)
    recipe = Config().override(["eval.bf16=true", "eval.channels_last=true"])  # the model's own config, not the user's
    path = precision.scoring_path(recipe, "cpu")
    assert (path.bf16, path.channels_last) == (False, precision.FP32_CHANNELS_LAST)
    assert "this CPU has no native bf16" in path.describe()
    assert not path.apply(recipe).eval.bf16


def test_fp32_flag_and_the_users_own_fields_win(native) -> None:
    native(True)
    assert not precision.scoring_path(Config(), "cpu", fp32=True).bf16
    described = precision.scoring_path(Config(), "cpu", fp32=True).describe()
    assert described.startswith("fp32") and described.endswith("(--fp32)")
    user = Config().override(["eval.bf16=false"])
    assert not precision.scoring_path(user, "cpu", explicit={"eval.bf16"}).bf16
    user = Config().override(["eval.channels_last=false"])
    path = precision.scoring_path(user, "cpu", explicit={"eval.channels_last"})
    assert (path.bf16, path.channels_last) == (True, False)
    user = Config().override(["eval.channels_last=false"])
    assert not precision.scoring_path(user, "cpu", fp32=True, explicit={"eval.channels_last"}).channels_last
    native(False)
    user = Config().override(["eval.bf16=true"])
    path = precision.scoring_path(user, "cpu", explicit={"eval.bf16"})
    assert not path.bf16 and "bf16 asked for" in path.reason  # never emulated bf16


def test_fp32_and_bf16_together_is_a_config_error(native) -> None:
    native(True)
    with pytest.raises(ConfigError, match="--fp32"):
        precision.scoring_path(Config().override(["eval.bf16=true"]), "cpu", fp32=True, explicit={"eval.bf16"})


def test_training_takes_the_fp32_path_where_bf16_would_be_emulated(native, synthetic_root: Path, tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    import json

    from mnad.train import train

    recipe = tiny_config().override(["train.bf16=true", "train.channels_last=true"])  # as the *_fast recipes ask
    native(True)
    assert precision.training_precision(recipe, "cpu") == recipe
    own = recipe.override(["train.bf16=false"])  # the user's own fp32 choice: its layout is kept
    native(False)
    assert precision.training_precision(own, "cpu") == own
    train(recipe, synthetic_root, tmp_path / "run", progress=False)
    ran = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert (ran["bf16"], ran["channels_last"]) == (False, precision.FP32_TRAIN_CHANNELS_LAST)
    said = [r.getMessage() for r in caplog.records if "bf16 asked for" in r.getMessage()]
    assert len(said) == 1 and "using fp32, NCHW" in said[0]


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    config = tiny_config()
    save_model(tmp_path / "tiny.safetensors", MNAD(config.model), config)
    return tmp_path / "tiny.safetensors"


@pytest.mark.parametrize(("is_native", "options", "expected", "line"), [
    (False, [], (False, precision.FP32_CHANNELS_LAST), "mnad: scoring path: fp32"),
    (True, [], (True, True), "mnad: scoring path: bf16 + channels_last"),
    (True, ["--fp32"], (False, precision.FP32_CHANNELS_LAST), "mnad: scoring path: fp32"),
    (True, ["--set", "eval.bf16=false"], (False, precision.FP32_CHANNELS_LAST), "(eval.bf16=false)"),
])
def test_evaluate_takes_the_path_and_says_it(native, monkeypatch: pytest.MonkeyPatch, checkpoint: Path, synthetic_root: Path,
                                             capsys: pytest.CaptureFixture[str], is_native: bool, options: list[str],
                                             expected: tuple[bool, bool], line: str) -> None:
    import mnad.evaluate

    native(is_native)
    seen = {}

    def fake_evaluate(model, config, *args, **kwargs):
        seen["path"] = (config.eval.bf16, config.eval.channels_last)
        return {"micro_auc": 0.5, "macro_auc": 0.5, "frames_scored": 1, "videos": 1, "abnormal_frames": 0, "per_video_auc": {}, "note": ""}

    monkeypatch.setattr(mnad.evaluate, "evaluate", fake_evaluate)
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data-root", str(synthetic_root), "--quiet", *options]) == 0
    assert seen["path"] == expected
    err = capsys.readouterr().err
    assert err.count("mnad: scoring path:") == 1 and line in err


def test_detect_takes_the_path_and_says_it(native, monkeypatch: pytest.MonkeyPatch, checkpoint: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    import mnad.detect

    native(True)
    seen = {}

    def fake_detect(model, config, *args, **kwargs):
        seen["path"] = (config.eval.bf16, config.eval.channels_last)
        return {}

    monkeypatch.setattr(mnad.detect, "detect", fake_detect)
    assert main(["detect", str(tmp_path), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert seen["path"] == (True, True)
    assert "mnad: scoring path: bf16 + channels_last" in capsys.readouterr().err



def test_an_exported_model_says_onnx_runtime(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import mnad.detect
    from mnad.export import export_onnx

    config = tiny_config()
    export_onnx(MNAD(config.model), config, tmp_path / "m.onnx")
    monkeypatch.setattr(mnad.detect, "detect", lambda *args, **kwargs: {})
    assert main(["detect", str(tmp_path), "--checkpoint", str(tmp_path / "m.onnx"), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert "mnad: scoring path: ONNX Runtime, fp32 (an exported model)" in capsys.readouterr().err


# ---- the benchmarks' bookkeeping (no timing) -----------------------------------------------------------------------


def load_benchmark(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_the_contention_benchmark_sets_each_policy_in_its_workers_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    contention = load_benchmark("contention")
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the caller's own value never leaks into a row
    assert "OMP_WAIT_POLICY" not in contention.worker_env("unset") and "GOMP_SPINCOUNT" not in contention.worker_env("unset")
    assert contention.worker_env("passive")["OMP_WAIT_POLICY"] == "PASSIVE"
    assert contention.worker_env("spin10000")["GOMP_SPINCOUNT"] == "10000"
    assert "OMP_WAIT_POLICY" not in contention.worker_env("spin10000")
    setting = contention.parse_setting("t1-passive-cl")
    assert (setting["threads"], setting["policy"], setting["channels_last"], setting["compile"]) == (1, "passive", True, False)
    with pytest.raises(SystemExit):
        contention.parse_setting("t1-sleepy")


def test_the_performance_doc_renders_contention_and_memory_results() -> None:
    make_doc = load_benchmark("make_performance_doc")
    machine = {"cpu_model": "some CPU", "logical_cpus": 2, "cpu_flags": ["avx2"]}
    contention = {"created": "now", "command": "python benchmarks/contention.py", "machine": machine, "torch_default_threads": 2,
                  "settings": {"sizes": [128], "loads": {"idle": "no competitor", "busy": "a busy loop"}}, "notes": ["a note"],
                  "rows": [{"size": 128, "name": "t0-passive", "load": "idle", "fps": 10.0},
                           {"size": 128, "name": "t0-passive", "load": "busy", "fps": 6.0, "slowdown": 10 / 6},
                           {"size": 128, "name": "t0-unset", "load": "idle", "fps": 9.0},
                           {"size": 128, "name": "t0-unset", "load": "busy", "error": "worker failed"}]}
    text = "\n".join(make_doc.contention_section(contention, "contention.json"))
    assert "| `t0-passive` | 10.00 | 6.00 (1.7×) |" in text and "| `t0-unset` | 9.00 | failed |" in text and "- a note" in text
    memory = {"created": "now", "command": "python benchmarks/memory.py", "machine": machine,
              "settings": {"size": 256, "frames": 20, "target_mib": 614.4},
              "rows": [{"path": "fp32", "peak_rss_mib": 500.0, "within_target": True, "stages_rss_peak_mib": {"imports": [238.0, 238.0]}},
                       {"path": "onnx", "error": "export failed", "within_target": False}]}
    text = "\n".join(make_doc.memory_section(memory, "memory.json"))
    assert "| `fp32` | 500 | yes | 238 (238) |" in text and "| `onnx` | failed: export failed | – | – |" in text
