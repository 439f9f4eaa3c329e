"""Patch PSNR and patch D take the worst of regions (docs/method.md §9.1): the same pixel windows where the image size
is a multiple of 128, only nearly the same elsewhere (a query covers 8 pixels, so a query window's stride is rounded
down), as the docs say."""

from __future__ import annotations

import pytest
import torch

from mnad.scoring import _patch_means

QUERY_PIXELS = 8  # the encoder's downsampling: one query per 8 x 8 pixels


def pixel_windows(size: int) -> tuple[set, set]:
    """The (top, left, side) pixel windows of patch PSNR on a size x size frame and of patch D on its query map."""
    _, rows, cols, side = _patch_means(torch.zeros(1, 1, size, size))
    psnr = {(r, c, side) for r in rows for c in cols}
    _, rows, cols, side = _patch_means(torch.zeros(1, 1, size // QUERY_PIXELS, size // QUERY_PIXELS))
    distance = {(r * QUERY_PIXELS, c * QUERY_PIXELS, side * QUERY_PIXELS) for r in rows for c in cols}
    return psnr, distance


@pytest.mark.parametrize("size", [128, 256, 384])
def test_the_two_terms_look_at_the_same_regions_at_multiples_of_128(size: int) -> None:
    psnr, distance = pixel_windows(size)
    assert psnr == distance and len(psnr) == 15 * 15


@pytest.mark.parametrize(("size", "psnr_stride", "distance_stride"), [(192, 12, 8), (64, 4, 8), (320, 20, 16)])
def test_elsewhere_the_regions_only_nearly_match(size: int, psnr_stride: int, distance_stride: int) -> None:
    psnr, distance = pixel_windows(size)
    assert psnr != distance
    assert {side for *_, side in psnr} == {side for *_, side in distance} == {size // 8}  # windows of the same size
    assert sorted({c for _, c, _ in psnr})[1] == psnr_stride and sorted({c for _, c, _ in distance})[1] == distance_stride
