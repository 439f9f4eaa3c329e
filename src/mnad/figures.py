"""The paper's memory figures from a trained model.

- ``matching.png`` (paper Fig. 5): matching probabilities of the queries of a few frames to the memory items,
  softmax over items of q . p (the weights of the memory read), one row per query sorted by its nearest item, beside
  a map of each position's nearest item over the frame.
- ``tsne.png`` (paper Figs. 1 and 6): t-SNE of a sample of query features together with the items, each query
  coloured by its nearest item.

With ``compare_model`` (e.g. one trained without the separateness loss) both models are drawn side by side on the
same clips. ``figures.json`` records the files, the weights they were drawn from (``weights_sha256``: the report
shows them only beside an evaluation of those weights) and a few numbers: how peaked the matching is, and how the
queries spread over the items. A clip is placed by its last frame (``clips``); the frame shown and queried is each
model's target frame of it (``target_frame``: a reconstruction model's is not the clip's last), and that is the frame
the titles and ``shown_frames`` name, per model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mnad.atomic import atomic_write_many
from mnad.config import Config, check_count, check_same_model
from mnad.data import Video, split_videos, to_tensor
from mnad.data.clips import spread_clips
from mnad.data.layouts import dataset_dir, split_dir
from mnad.data.videos import VideoFile, check_pixel_ranges
from mnad.errors import ConfigError, DataError
from mnad.launch import single_process
from mnad.model import MNAD
from mnad.model.memory import matching_probabilities as memory_matching
from mnad.outputs import FIGURES_INDEX, check_replace_in
from mnad.precision import checked_device
from mnad.report.plots import figure as _figure
from mnad.report.plots import png_bytes as _png
from mnad.report.thumbnails import source_size
from mnad.threads import apply_threads

FIGURES_FILES = ("matching.png", "tsne.png", FIGURES_INDEX)  # what `mnad figures --out DIR` writes into DIR, together


def _videos(config: Config, data: str | Path | list[Video]) -> list[Video]:
    """The videos the figures are drawn from: a dataset's test split where its layout has one (any fault in it is an
    error: it was a silent switch to the training videos), else its training videos (own footage: every video of the
    folder, whatever the sub-folders are named)."""
    if not isinstance(data, str | Path):
        check_pixel_ranges(list(data), config.model.pixel_range)
        return list(data)
    has_testing = False  # own footage (no dataset) is what lies in its folder: a sub-folder named Test is one video
    if config.dataset:
        try:
            has_testing = split_dir(dataset_dir(data, config.dataset), "testing") is not None
        except DataError:  # no benchmark layout there, or no data root: training_videos reads it or says why
            pass
    if has_testing:
        return split_videos(data, config.dataset, "testing", config.model.pixel_range)
    from mnad.train import training_videos

    return training_videos(config, data, decode=False)  # a few clips: only their videos are decoded (clip_positions)


def _counted(video: Video, decode_as: tuple[int, int] | None) -> int:
    """A video's true length: for a video file, by its one decode at ``decode_as`` (the frames its clips are then read
    from), or by a counting pass where no size is given."""
    if decode_as is not None and isinstance(video, VideoFile):
        video.frame(0, *decode_as)  # decodes the whole file to disk, counting it
    return len(video)


def clip_positions(videos: list[Video], window: int, count: int, *,
                   decode_as: tuple[int, int] | None = None) -> list[tuple[int, int]]:
    """``count`` clips (video index, last frame) spread evenly over all the videos' valid clips (``spread_clips``).

    A video file is planned by its container's frame count (``expected_frames``, no decode); only those the clips
    are drawn from are counted truly, by their decode at ``decode_as`` (the size the clips are read at: one pass
    each), and where that count differs from the container's, the clips are placed again with it. The other video
    files are never decoded (was: a counting pass each, and a second pass, the decode, of those drawn from)."""
    lengths = [v.expected_frames() for v in videos]
    exact = [not isinstance(v, VideoFile) for v in videos]
    for i, video in enumerate(videos):
        if not exact[i] and lengths[i] <= 0:  # a container without a count: it cannot be placed without one
            lengths[i], exact[i] = _counted(video, decode_as), True
    while True:  # each round counts at least one more video truly, or ends
        picks = spread_clips([range(n) for n in lengths], window, count)  # spread_clips needs only the lengths
        if not picks:
            raise DataError(f"no clip of {window} frames in {len(videos)} videos")
        unsure = sorted({vi for vi, _ in picks if not exact[vi]})
        if not unsure:
            return [(vi, start + window - 1) for vi, start in picks]
        for vi in unsure:
            lengths[vi], exact[vi] = _counted(videos[vi], decode_as), True


def target_frame(config: Any, last: int) -> int:
    """The frame a model (``config``: its model config) queries and shows in the clip ending at frame ``last``: its
    ``target_index``-th frame, ``lag`` frames before the last (prediction: the last; reconstruction of 16: 7 before)."""
    return last - config.lag


def model_queries(model: MNAD, videos: list[Video], positions: list[tuple[int, int]], *, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Queries (clips, K, C) of the given clips, and each clip's target frame as uint8 (clips, H, W, C)."""
    m = model.config
    model, training = model.to(device), model.training
    model.eval()  # BatchNorm's running statistics; the caller's mode is put back (it may be mid-training)
    queries, frames = [], []
    try:
        with torch.inference_mode():
            for vi, last in positions:
                clip = np.stack([videos[vi].frame(j, m.image_size, m.channels) for j in range(last - m.t_length + 1, last + 1)])
                inputs, _ = model.split_clip(to_tensor(clip)[None].to(device))
                queries.append(model(inputs).queries[0].float().cpu().numpy())
                frames.append(clip[m.target_index])
    finally:
        model.train(training)
    return np.stack(queries), np.stack(frames)


def matching_probabilities(queries: np.ndarray, items: np.ndarray) -> np.ndarray:
    """``model.memory.matching_probabilities`` of numpy queries (N, C) and items (M, C), (N, M)."""
    return memory_matching(torch.from_numpy(queries).float(), torch.from_numpy(items).float()).numpy()


def _palette(m: int) -> np.ndarray:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if m <= 10 else "tab20" if m <= 20 else "hsv"]
    return np.array([cmap(i if m <= 20 else i / m)[:3] for i in range(m)])


def _stats(probs: np.ndarray, m: int) -> dict:
    nearest = probs.argmax(1)
    entropy = -(probs * np.log(np.clip(probs, 1e-12, None))).sum(1)
    usage = np.bincount(nearest, minlength=m) / nearest.size
    return {
        "mean_max_probability": float(probs.max(1).mean()),
        "mean_entropy": float(entropy.mean()),
        "uniform_entropy": float(np.log(m)),
        "items_used": int((usage > 0).sum()),
        "item_usage": [round(float(u), 4) for u in usage],
    }


def _to_rgb(frame: np.ndarray) -> np.ndarray:
    return np.repeat(frame, 3, axis=2) if frame.shape[2] == 1 else frame[:, :, ::-1]


def check_figures_output(out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """The figures' folder (``--out``): writable, and no earlier figures there unless ``overwrite``
    (``outputs.check_replace``); the three files are replaced together, once the new ones are drawn."""
    return check_replace_in(out_dir, FIGURES_FILES, overwrite=overwrite)


def check_options(model: MNAD, config: Config, out_dir: str | Path, *, frames: int, clips: int, max_queries: int, seed: int,
                  device: str | torch.device = "cpu", overwrite: bool = False) -> None:
    """memory_figures' options, checked before any work, each error naming its option (the CLI's name)."""
    checked_device(device)  # a device this machine lacks is one error, not a RuntimeError from inside torch
    for option, value in (("--frames", frames), ("--clips", clips), ("--queries", max_queries)):
        check_count(option, value)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:  # numpy's and t-SNE's seed range
        raise ConfigError(f"--seed must be a whole number in [0, 2**32), got {seed!r}")
    check_figures_output(out_dir, overwrite=overwrite)
    check_same_model(model, config)  # the figures are of the trained model


def memory_figures(
    model: MNAD,
    config: Config,
    data: str | Path | list[Video],
    out_dir: str | Path,
    compare_model: MNAD | None = None,
    *,
    labels: tuple[str, str] | None = None,
    frames: int = 3,
    clips: int = 24,
    max_queries: int = 1500,
    seed: int = 0,
    device: str = "cpu",
    overwrite: bool = False,
) -> dict:
    """Write matching.png, tsne.png and figures.json to ``out_dir``; returns the figures.json record. Earlier figures
    there are refused before any work unless ``overwrite`` (``check_figures_output``).

    ``data``: a data root (its test split, else its training videos) or a list of videos. ``clips`` clips spread
    over the videos give the queries; ``frames`` of them are shown in the matching figure; at most ``max_queries``
    queries (a random sample) go into the t-SNE.
    """
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    single_process("mnad figures")  # each rank would draw the same figures into out_dir
    check_options(model, config, out_dir, frames=frames, clips=clips, max_queries=max_queries, seed=seed, device=device,
                  overwrite=overwrite)
    apply_threads(config)  # train.threads (--threads), as train() applies it
    models = [model] + ([compare_model] if compare_model is not None else [])
    for mdl in models:
        if mdl.memory is None:
            raise ConfigError("memory figures need a model with a memory (this one was trained with model.memory = false)")
    names = list(labels) if labels else ["this model", "compared model"][: len(models)]
    videos = _videos(config, data)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{out}: cannot create the figures folder ({exc.strerror or exc})") from exc
    rng = np.random.default_rng(seed)
    window = max(mdl.config.t_length for mdl in models)
    decode_as = (config.model.image_size, config.model.channels)  # the size the clips are read at
    positions = clip_positions(videos, window, max(clips, frames), decode_as=decode_as)  # the same clips for both models
    shown = [positions[i] for i in np.linspace(0, len(positions) - 1, num=min(frames, len(positions))).round().astype(int)]

    results = []
    for mdl in models:
        queries, images = model_queries(mdl, videos, positions, device=device)
        items = mdl.memory.items.detach().float().cpu().numpy()
        results.append({"queries": queries, "images": images, "items": items})

    # Fig. 5: matching probabilities of the shown frames' queries; shared colour scale so the models compare.
    n_models = len(models)
    m_items = [r["items"].shape[0] for r in results]
    fig = _figure(3.4 * 2 * n_models, 2.8 * len(shown) + 0.6)
    axes = np.array(fig.subplots(len(shown), 2 * n_models, squeeze=False))
    shown_probs = []
    for r in results:
        idx = [positions.index(p) for p in shown]
        shown_probs.append([matching_probabilities(r["queries"][i], r["items"]) for i in idx])
    vmax = max(float(p.max()) for probs in shown_probs for p in probs)
    for col, (r, probs, name) in enumerate(zip(results, shown_probs, names, strict=True)):
        palette = _palette(r["items"].shape[0])
        for row, (p, pos) in enumerate(zip(probs, shown, strict=True)):
            image = _to_rgb(r["images"][positions.index(pos)])
            side = int(round(np.sqrt(p.shape[0])))
            nearest = p.argmax(1)
            ax = axes[row, 2 * col]
            # the model's square frame stretched back to the source frame's aspect (``thumbnails.source_size``), as the
            # report's thumbnails and detect's regions are drawn; the nearest-item map over the same extent
            height, width = source_size(videos[pos[0]], target_frame(models[col].config, pos[1])) or image.shape[:2]
            extent = (-0.5, width - 0.5, height - 0.5, -0.5)
            ax.imshow(image, extent=extent)
            if side * side == p.shape[0]:  # square query grid: overlay each position's nearest item
                ax.imshow(palette[nearest.reshape(side, side)], alpha=0.45, extent=extent, interpolation="nearest")
            ax.set_title(f"{name}\nvideo {videos[pos[0]].name}, frame {target_frame(models[col].config, pos[1])}: nearest item",
                         fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            order = np.lexsort((-p.max(1), nearest))
            ax = axes[row, 2 * col + 1]
            shown_im = ax.imshow(p[order], aspect="auto", cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest")
            ax.set_title(f"{name}: matching probabilities", fontsize=8)
            ax.set_xlabel("memory item", fontsize=8)
            ax.set_ylabel(f"query ({p.shape[0]}, sorted by item)", fontsize=8)
            ax.set_xticks(range(p.shape[1]))
            ax.tick_params(labelsize=7)
            for tick, color in zip(ax.get_xticklabels(), palette, strict=True):  # item colours as on the frame and the t-SNE
                tick.set_color(color)
                tick.set_fontweight("bold")
            fig.colorbar(shown_im, ax=ax, shrink=0.8).ax.tick_params(labelsize=7)
    matching = _png(fig)

    # Figs. 1 and 6: t-SNE of sampled queries plus the items, coloured by nearest item.
    fig = _figure(5.2 * n_models, 4.8)
    axes = np.atleast_1d(fig.subplots(1, n_models))
    stats = []
    for ax, r, name, m in zip(axes, results, names, m_items, strict=True):
        flat = r["queries"].reshape(-1, r["queries"].shape[-1])
        sample = flat[np.sort(rng.choice(flat.shape[0], size=min(max_queries, flat.shape[0]), replace=False))]
        points = np.concatenate([sample, r["items"]])
        perplexity = float(min(30.0, (points.shape[0] - 1) / 3))
        # One OpenMP thread: on a busy machine sklearn's threads spin-wait and a 2-s t-SNE takes a minute.
        with threadpool_limits(limits=1, user_api="openmp"):
            embedded = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points)
        probs = matching_probabilities(sample, r["items"])
        nearest = probs.argmax(1)
        palette = _palette(m)
        ax.scatter(embedded[: len(sample), 0], embedded[: len(sample), 1], c=palette[nearest], s=6, alpha=0.6, linewidths=0)
        ax.scatter(embedded[len(sample):, 0], embedded[len(sample):, 1], c=palette, s=180, marker="*", edgecolors="black",
                   linewidths=0.8, label="memory items")
        ax.set_title(f"{name}: {len(sample)} queries, {m} items", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(loc="best", fontsize=7)
        stats.append(_stats(matching_probabilities(r["queries"].reshape(-1, r["queries"].shape[-1]), r["items"]), m) |
                     {"queries_in_tsne": int(len(sample))})
    tsne = _png(fig)

    from mnad.checkpoint import weights_digest

    digests = [weights_digest(mdl) for mdl in models]
    record: dict[str, Any] = {
        "files": {"matching": "matching.png", "tsne": "tsne.png"},
        "weights_sha256": digests[0],  # this model's: the report shows the figures only beside an evaluation of these weights
        "models": [{"label": name, "weights_sha256": digest, **s} for name, digest, s in zip(names, digests, stats, strict=True)],
        "clips": [{"video": videos[vi].name, "last_frame": f} for vi, f in positions],  # each clip, by its last frame
        # the clips drawn in matching.png and, in "models"' order, the frame each model shows of it (its target frame)
        "shown_frames": [{"video": videos[vi].name, "clip_last_frame": f, "frames": [target_frame(mdl.config, f) for mdl in models]}
                         for vi, f in shown],
        "seed": seed,
    }
    # the figures and their index land together (atomically): an earlier set stays whole until this one is written
    atomic_write_many(dict(zip((out / name for name in FIGURES_FILES), (matching, tsne, json.dumps(record, indent=2).encode()), strict=True)))
    return record


def model_label(config: Config, fallback: str) -> str:
    """A short label for a model's column: its recipe name and separateness weight."""
    return f"{config.name or fallback} (lambda_sep={config.train.lambda_separate:g})"
