"""Training on one's own footage is a config the API makes (config.own_footage_config), as `mnad train --data` does."""

from __future__ import annotations

from mnad.config import DEFAULT_HOLDOUT, load_config, own_footage_config


def test_own_footage_is_scored_on_the_worst_region_with_a_held_out_tail() -> None:
    config = own_footage_config(load_config("ped2_pred_fast"))
    assert config.dataset == "" and config.eval.psnr_region == config.eval.distance_region == "patch"
    assert config.train.holdout == DEFAULT_HOLDOUT


def test_whole_held_out_videos_replace_the_tail_and_the_users_settings_win() -> None:
    def whole_videos(config):  # noqa: ANN001, ANN202
        return config.override(['train.holdout_videos=["Train001"]'])

    config = own_footage_config(load_config("ped2_pred_fast"), whole_videos)
    assert config.train.holdout_videos == ["Train001"] and config.train.holdout == load_config("ped2_pred_fast").train.holdout
    config = own_footage_config(load_config("ped2_pred_fast"), lambda c: c.override(["eval.psnr_region=frame"]))
    assert config.eval.psnr_region == "frame" and config.train.holdout == DEFAULT_HOLDOUT
