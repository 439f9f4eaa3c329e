"""Per-frame scores, normalisation and AUC (method doc, section 5) against numbers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mnad.config import Config
from mnad.evaluate import VideoScores, add_scores, attach_labels, auc_metrics
from mnad.scoring import anomaly_score, causal_minmax, feature_distance, minmax, patch_distance, psnr, regular_score, smooth

# ----------------------------------------------------------------------------------------------------- PSNR


def test_psnr_peak_one_by_hand() -> None:
    predicted = torch.zeros(1, 1, 2, 2)  # 0.5 on [0, 1]
    target = torch.tensor([[[[-1.0, 0.0], [0.0, 0.0]]]])  # 0, 0.5, 0.5, 0.5 on [0, 1]
    # MSE = 0.5^2 / 4 = 0.0625; PSNR = 10 log10(1 / 0.0625) = 10 log10(16)
    assert psnr(predicted, target).item() == pytest.approx(10 * math.log10(16), abs=1e-5)
    assert psnr(predicted, target, peak="one").item() == pytest.approx(12.0412, abs=1e-4)


def test_psnr_peak_max_by_hand() -> None:
    predicted = torch.tensor([[[[0.0, -1.0], [-0.5, -1.0]]]])  # 0.5, 0, 0.25, 0 on [0, 1]: max 0.5
    target = torch.tensor([[[[-1.0, -1.0], [-0.5, -1.0]]]])  # 0, 0, 0.25, 0
    # MSE = 0.25 / 4; peak^2 = 0.25; PSNR = 10 log10(0.25 / 0.0625) = 10 log10(4)
    assert psnr(predicted, target, peak="max").item() == pytest.approx(10 * math.log10(4), abs=1e-5)
    assert psnr(predicted, target, peak="one").item() == pytest.approx(10 * math.log10(16), abs=1e-5)


def test_psnr_is_per_sample_over_all_channels() -> None:
    predicted = torch.zeros(2, 3, 2, 2)
    target = torch.zeros(2, 3, 2, 2)
    target[0, 2, 1, 1] = -1.0  # one element of 12 off by 0.5: MSE = 0.25 / 12
    target[1] = -1.0  # every element off by 0.5: MSE = 0.25
    values = psnr(predicted, target)
    assert values.shape == (2,)
    assert values[0].item() == pytest.approx(10 * math.log10(12 / 0.25), abs=1e-4)
    assert values[1].item() == pytest.approx(10 * math.log10(4), abs=1e-4)


def test_psnr_identical_frames_is_finite() -> None:
    frame = torch.rand(1, 3, 4, 4)
    assert math.isfinite(psnr(frame, frame).item())
    assert psnr(frame, frame).item() > 100


# ----------------------------------------------------------------------------------------------------- E_t

# Per-channel differences on the [0, 1] scale of a 1x3x2x2 example, chosen so that each pixel's
# channel norm is a round number: pixels (0,0) -> 0.3, (0,1) -> 0.2, (1,0) -> 0.3, (1,1) -> 0.5.
DIFF = [
    [[0.1, 0.2], [0.0, 0.4]],
    [[0.2, 0.0], [0.3, 0.0]],
    [[0.2, 0.0], [0.0, 0.3]],
]


def _example() -> tuple[torch.Tensor, torch.Tensor]:
    target = torch.zeros(1, 3, 2, 2)
    predicted = 2 * torch.tensor(DIFF)[None]  # (pred - target) / 2 = DIFF on [0, 1]
    return predicted, target


def test_regular_score_code_by_hand() -> None:
    # e = d^2 per element; w = 1 - exp(-e); E = sum(w e) / sum(w)
    elements = [d for channel in DIFF for row in channel for d in row]
    e = [d * d for d in elements]
    w = [1 - math.exp(-x) for x in e]
    expected = sum(wi * ei for wi, ei in zip(w, e, strict=True)) / sum(w)
    predicted, target = _example()
    assert regular_score(predicted, target, kind="code").item() == pytest.approx(expected, rel=1e-5)
    assert regular_score(predicted, target).item() == pytest.approx(expected, rel=1e-5)  # code is the default
    assert expected == pytest.approx(0.09820, abs=1e-5)  # the hand number itself, worked out once


def test_regular_score_paper_by_hand() -> None:
    # n = per-pixel L2 norm over channels; w = 1 - exp(-n); E = sum(w n) / sum(w)
    norms = [0.3, 0.2, 0.3, 0.5]
    w = [1 - math.exp(-n) for n in norms]
    expected = sum(wi * n for wi, n in zip(w, norms, strict=True)) / sum(w)
    predicted, target = _example()
    assert regular_score(predicted, target, kind="paper").item() == pytest.approx(expected, rel=1e-5)
    assert expected == pytest.approx(0.35541, abs=1e-5)


def test_regular_score_is_symmetric_in_sign_and_zero_for_perfect_prediction() -> None:
    predicted, target = _example()
    assert regular_score(-predicted, target).item() == pytest.approx(regular_score(predicted, target).item())
    assert regular_score(target, target).item() == 0.0


# ----------------------------------------------------------------------------------------------------- D


def test_feature_distance_by_hand() -> None:
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    queries = torch.tensor([[[0.8, 0.6], [0.6, -0.8]], [[0.0, 1.0], [0.0, 1.0]]])  # (B=2, K=2, C=2)
    # sample 0: q1 nearest p0: (0.2^2 + 0.6^2) = 0.4; q2 nearest p0 (0.6 > -0.8): 0.16 + 0.64 = 0.8 -> 1.2 / 4
    # sample 1: both equal p1: 0
    d = feature_distance(queries, items)
    torch.testing.assert_close(d, torch.tensor([0.3, 0.0]))


def test_patch_distance_is_the_worst_block_of_queries() -> None:
    """On a 16 x 16 query map (128 px frames) the regions are 2 x 2 blocks at stride 1: one far query in a corner
    gives a quarter of its distance; spread evenly over the map, patch D equals D."""
    items = torch.nn.functional.normalize(torch.randn(10, 8), dim=1)
    even = items[torch.zeros(1, 256, dtype=torch.long)] * 0.5  # every query half its nearest item: equal distances
    torch.testing.assert_close(patch_distance(even, items, (16, 16)), feature_distance(even, items))
    queries = items[torch.zeros(1, 256, dtype=torch.long)].clone()  # every query on an item: D = 0
    queries[0, 0] = -items[0]  # one query far from every item, in the top-left corner
    per_query = ((queries[0, 0] - items[(queries[0, 0] @ items.t()).argmax()]) ** 2).mean()
    torch.testing.assert_close(patch_distance(queries, items, (16, 16)), (per_query / 4).reshape(1))
    torch.testing.assert_close(feature_distance(queries, items), (per_query / 256).reshape(1))
    # one memory per sample (several streams): each sample's own items
    batched = patch_distance(torch.cat([queries, even]), torch.stack([items, items]), (16, 16))
    torch.testing.assert_close(batched, torch.cat([patch_distance(queries, items, (16, 16)), patch_distance(even, items, (16, 16))]))


# ----------------------------------------------------------------------------------------------------- normalisation


def test_minmax() -> None:
    np.testing.assert_allclose(minmax(np.array([1.0, 3.0, 2.0, 5.0])), [0.0, 0.5, 0.25, 1.0])
    np.testing.assert_array_equal(minmax(np.array([4.0, 4.0, 4.0])), [0.0, 0.0, 0.0])
    assert minmax(np.array([])).size == 0


def test_causal_minmax_by_hand() -> None:
    # ranges so far: [2,2] -> 0; [2,4] -> 1; [2,4]: 3 -> 0.5; [1,4]: 1 -> 0; [1,4]: 2.5 -> 0.5
    np.testing.assert_allclose(causal_minmax(np.array([2.0, 4.0, 3.0, 1.0, 2.5])), [0.0, 1.0, 0.5, 0.0, 0.5])
    np.testing.assert_array_equal(causal_minmax(np.array([7.0, 7.0])), [0.0, 0.0])


def test_causal_minmax_uses_no_future_values() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(size=30)
    base = causal_minmax(values)
    for t in (5, 17, 29):
        changed = values.copy()
        changed[t] = 100.0
        out = causal_minmax(changed)
        np.testing.assert_array_equal(out[:t], base[:t])
        assert out[t] != base[t]
    # whereas the per-video min-max does look ahead
    changed = values.copy()
    changed[-1] = 100.0
    assert not np.allclose(minmax(changed)[:5], minmax(values)[:5])


def test_anomaly_score_formula() -> None:
    p = np.array([10.0, 20.0, 15.0])  # g(P) = 0, 1, 0.5
    d = np.array([0.3, 0.1, 0.2])  # g(D) = 1, 0, 0.5
    # S = alpha (1 - g(P)) + (1 - alpha) g(D)
    np.testing.assert_allclose(anomaly_score(p, d, alpha=0.6), [1.0, 0.0, 0.5])
    np.testing.assert_allclose(anomaly_score(p, d, alpha=0.6, normalization="video"), [1.0, 0.0, 0.5])
    d2 = np.array([0.1, 0.3, 0.2])  # g(D) = 0, 1, 0.5
    np.testing.assert_allclose(anomaly_score(p, d2, alpha=0.7), [0.7, 0.3, 0.5])
    np.testing.assert_allclose(anomaly_score(p, d2, alpha=1.0), [1.0, 0.0, 0.5])  # PSNR only
    np.testing.assert_allclose(anomaly_score(p, d2, alpha=0.0), [0.0, 1.0, 0.5])  # D only


def test_anomaly_score_causal() -> None:
    p = np.array([10.0, 20.0, 15.0, 5.0])  # causal g: 0, 1, 0.5, 0
    d = np.array([0.2, 0.1, 0.4, 0.3])  # causal g: 0, 0, 1, 2/3
    np.testing.assert_allclose(anomaly_score(p, d, alpha=0.5, normalization="causal"),
                               [0.5 * 1 + 0, 0.0, 0.5 * 0.5 + 0.5, 0.5 * 1 + 0.5 * 2 / 3])


# ----------------------------------------------------------------------------------------------------- AUC


def pair_auc(labels: list[int], scores: list[float]) -> float:
    """ROC AUC by counting (abnormal, normal) pairs: 1 if the abnormal frame scores higher, 1/2 on a tie."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    neg = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def video(name: str, labels: list[int], scores: list[float]) -> VideoScores:
    n = len(labels)
    zeros = np.zeros(n)
    return VideoScores(name=name, frames=np.arange(n), psnr=zeros, patch_psnr=zeros, distance=zeros, patch_distance=zeros, regular=zeros,
                       updated=np.zeros(n, dtype=bool), score=np.array(scores), labels=np.array(labels))


def test_auc_metrics_by_counting_pairs() -> None:
    videos = [
        video("a", [0, 0, 1, 1], [0.1, 0.4, 0.4, 0.8]),  # pairs: 0.4>0.1, 0.4=0.4 (half), 0.8>both -> 3.5/4
        video("b", [1, 0, 0], [0.5, 0.2, 0.6]),  # 0.5>0.2, 0.5<0.6 -> 1/2
        video("c", [1, 1], [0.3, 0.9]),  # one class only: in micro, not in macro
    ]
    metrics = auc_metrics(videos)
    # pooled: abnormal 0.4, 0.8, 0.5, 0.3, 0.9 vs normal 0.1, 0.4, 0.2, 0.6
    #   0.4 -> 1 + 0.5 + 1 + 0 = 2.5; 0.8 -> 4; 0.5 -> 3; 0.3 -> 2; 0.9 -> 4; total 15.5 of 20 pairs
    assert metrics["micro_auc"] == pytest.approx(15.5 / 20)
    assert metrics["micro_auc"] == pytest.approx(pair_auc([0, 0, 1, 1, 1, 0, 0, 1, 1],
                                                          [0.1, 0.4, 0.4, 0.8, 0.5, 0.2, 0.6, 0.3, 0.9]))
    assert metrics["per_video_auc"] == pytest.approx({"a": 0.875, "b": 0.5})
    assert metrics["macro_auc"] == pytest.approx((0.875 + 0.5) / 2)
    assert metrics["videos_in_macro"] == 2 and metrics["videos"] == 3
    assert metrics["frames_scored"] == 9 and metrics["abnormal_frames"] == 5


def test_micro_is_not_mean_of_videos() -> None:
    # Each video alone is perfectly ranked, but pooled their score scales clash: micro < 1 = macro.
    videos = [video("x", [0, 1], [0.5, 0.6]), video("y", [0, 1], [0.1, 0.2])]
    metrics = auc_metrics(videos)
    assert metrics["macro_auc"] == 1.0
    assert metrics["micro_auc"] == pytest.approx(pair_auc([0, 1, 0, 1], [0.5, 0.6, 0.1, 0.2]))
    assert metrics["micro_auc"] == pytest.approx(3 / 4)


def test_auc_undefined_with_one_class() -> None:
    metrics = auc_metrics([video("n", [0, 0, 0], [0.1, 0.2, 0.3])])
    assert metrics["micro_auc"] is None and metrics["macro_auc"] is None and metrics["videos_in_macro"] == 0


def test_attach_labels_drops_first_frames_of_prediction() -> None:
    scored = video("v", [0] * 6, [0.0] * 6)
    scored.frames = np.arange(4, 10)  # a prediction model scores frames 4..9 of a 10-frame video
    full = np.array([1, 1, 1, 1, 0, 0, 1, 0, 1, 1])
    attach_labels([scored], [full])
    np.testing.assert_array_equal(scored.labels, [0, 0, 1, 0, 1, 1])


def test_smooth_is_a_trailing_mean() -> None:
    s = smooth(np.array([0.0, 3.0, 6.0, 9.0]), 2)
    np.testing.assert_allclose(s, [0.0, 1.5, 4.5, 7.5])
    # causal: a later value never changes an earlier smoothed value
    s2 = smooth(np.array([0.0, 3.0, 6.0, 100.0]), 2)
    np.testing.assert_allclose(s2[:3], s[:3])
    np.testing.assert_array_equal(smooth(s2, 1), s2)


def test_eval_smoothing_averages_each_video_on_its_own() -> None:
    rng = np.random.default_rng(0)
    videos = []
    for name in ("a", "b"):
        v = video(name, [0] * 6, [0.0] * 6)
        v.psnr, v.distance = rng.uniform(20, 40, 6), rng.uniform(0, 1, 6)
        videos.append(v)
    add_scores(videos, Config().override(["eval.smoothing=3"]))
    for v in videos:
        raw = anomaly_score(v.psnr, v.distance, alpha=0.6)
        # the first frame of each video is its own score: nothing leaks in from the video before
        assert v.score[0] == pytest.approx(raw[0])
        assert v.score[2] == pytest.approx(raw[:3].mean()) and v.score[5] == pytest.approx(raw[3:].mean())
    add_scores(videos, Config())  # the published protocol: no smoothing
    np.testing.assert_allclose(videos[1].score, anomaly_score(videos[1].psnr, videos[1].distance, alpha=0.6))
