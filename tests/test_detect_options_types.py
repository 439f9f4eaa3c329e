"""DetectOptions checks the type of every field, not only the numbers' (an audit found overwrite='no' taken as
true: it replaced an earlier run in --out)."""

from __future__ import annotations

import numpy as np
import pytest

from mnad.detect import DetectOptions
from mnad.errors import ConfigError


@pytest.mark.parametrize("field", ["overwrite", "save_video"])
@pytest.mark.parametrize("value", ["no", "yes", 0, 1, None, np.bool_(True)])
def test_a_bool_option_must_be_true_or_false(field: str, value: object) -> None:
    option = "--" + field.replace("_", "-")
    with pytest.raises(ConfigError, match=rf"^{option} must be true or false, got "):
        DetectOptions(**{field: value})
    assert getattr(DetectOptions(**{field: True}), field) is True


def test_the_message_shows_what_was_given() -> None:
    with pytest.raises(ConfigError) as caught:
        DetectOptions(overwrite="no")
    assert str(caught.value) == "--overwrite must be true or false, got 'no'"


@pytest.mark.parametrize(("options", "said"), [
    ({"save_maps": np.array(["npy"])}, "--save-maps must be npy or png"),  # was: accepted (an array's == is elementwise)
    ({"save_maps": ["npy"]}, "--save-maps must be npy or png"),
    ({"normalization": np.array(["causal"])}, "--normalization must be causal or calibrated"),  # was: accepted
    ({"normalization": np.array(["causal", "video"])}, "--normalization must be causal or calibrated"),  # was: ValueError
])
def test_a_string_option_must_be_a_string(options: dict, said: str) -> None:
    with pytest.raises(ConfigError, match=said):
        DetectOptions(**options)
