"""Model shapes, ranges and sizes (method doc, section 1), and the training losses against hand-computed values (2.5, 3)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config

from mnad.config import ModelConfig
from mnad.losses import feature_losses, mnad_loss
from mnad.model import MNAD, Decoder, Encoder, MNADOutput


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def tiny_model(**model: object) -> MNAD:
    torch.manual_seed(0)
    return MNAD(tiny_config(**model).model)


# ----------------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("memory", [True, False])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("task,t_length,frames_in", [("pred", 5, 4), ("recon", 1, 1), ("recon", 4, 4)])
def test_forward_shapes_and_ranges(task: str, t_length: int, frames_in: int, channels: int, memory: bool) -> None:
    model = tiny_model(task=task, t_length=t_length, channels=channels, memory=memory)
    assert model.encoder.stage1[0].in_channels == frames_in * channels
    torch.manual_seed(1)
    x = torch.rand(2, frames_in * channels, 32, 32) * 2 - 1
    out = model(x)
    assert isinstance(out, MNADOutput)
    assert out.frame.shape == (2, channels, 32, 32)
    assert out.frame.min() >= -1 and out.frame.max() <= 1  # tanh head
    k, c = (32 // 8) ** 2, 8 * 8
    assert out.queries.shape == (2, k, c)
    assert out.queries.dtype == torch.float32
    torch.testing.assert_close(out.queries.norm(dim=-1), torch.ones(2, k))
    assert (out.queries < 0).any()  # the encoder's last block has no ReLU: queries can be negative


@pytest.mark.parametrize("task,t_length", [("pred", 5), ("recon", 1)])
def test_decoder_input_width_with_and_without_memory(task: str, t_length: int) -> None:
    with_memory = tiny_model(task=task, t_length=t_length)
    without = tiny_model(task=task, t_length=t_length, memory=False)
    assert with_memory.decoder.bottleneck[0].in_channels == 2 * 64  # cat(query, read)
    assert without.decoder.bottleneck[0].in_channels == 64  # the query alone
    assert without.memory is None and with_memory.memory is not None


@pytest.mark.parametrize("task,t_length,target", [("pred", 5, 4), ("recon", 1, 0), ("recon", 16, 8), ("recon", 3, 1)])
def test_split_clip_takes_the_scored_frame(task: str, t_length: int, target: int) -> None:
    # recon with motion cues (paper: 16 frames in, the 9th reconstructed) sees every frame of the clip
    model = tiny_model(task=task, t_length=t_length, channels=1)
    clip = torch.arange(t_length, dtype=torch.float32).reshape(1, t_length, 1, 1, 1).expand(2, t_length, 1, 4, 4)
    inputs, frame = model.split_clip(clip)
    assert model.config.target_index == target
    assert torch.equal(frame, torch.full((2, 1, 4, 4), float(target)))
    expected_inputs = list(range(t_length - 1)) if task == "pred" else list(range(t_length))
    assert inputs[0, :, 0, 0].tolist() == expected_inputs


def test_without_memory_decoder_sees_only_the_query() -> None:
    # Without memory the frame is a function of the query map (and skips) only: feeding the decoder the
    # normalised query map by hand reproduces the forward.
    model = tiny_model(memory=False).eval()
    x = torch.rand(1, 12, 32, 32) * 2 - 1
    features, skips = model.encoder(x)
    expected = model.decoder(F.normalize(features, dim=1), skips)
    torch.testing.assert_close(model(x).frame, expected)


def test_memory_read_feeds_decoder() -> None:
    # With memory, the decoder's second half is the read of the items: changing the items changes the output.
    model = tiny_model().eval()
    x = torch.rand(1, 12, 32, 32) * 2 - 1
    before = model(x).frame
    features, skips = model.encoder(x)
    q = F.normalize(features, dim=1)
    flat = q.permute(0, 2, 3, 1).reshape(-1, q.shape[1])
    read = model.memory.read(flat).reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
    torch.testing.assert_close(before, model.decoder(torch.cat([q, read], dim=1), skips))
    model.memory.items.copy_(F.normalize(torch.randn_like(model.memory.items), dim=1))
    assert not torch.allclose(model(x).frame, before)


def test_memory_read_stays_fp32_under_bf16_autocast() -> None:
    # Autocast would run the read's matmuls in bf16; the decoder must get the fp32 read of the fp32 queries.
    model = tiny_model().eval()
    x = torch.rand(2, 12, 32, 32) * 2 - 1
    seen = {}
    model.decoder.bottleneck.register_forward_pre_hook(lambda module, args: seen.update(decoder_in=args[0]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        queries = model(x).queries
    read = seen["decoder_in"][:, queries.shape[-1]:]
    assert queries.dtype == read.dtype == torch.float32
    expected = model.memory.read(queries.reshape(-1, queries.shape[-1])).reshape(2, 4, 4, -1).permute(0, 3, 1, 2)
    assert torch.equal(read, expected)


def test_queries_are_positions_of_the_query_map() -> None:
    # queries[b, k] is the normalised feature vector at position k = row * W + col of the (H/8, W/8) map
    model = tiny_model()
    x = torch.rand(1, 12, 32, 32) * 2 - 1
    features, _ = model.encoder(x)
    queries = model(x).queries
    row, col = 2, 3
    torch.testing.assert_close(queries[0, row * 4 + col], F.normalize(features[0, :, row, col], dim=0))


def test_pred_uses_skips_recon_does_not() -> None:
    pred, recon = tiny_model(), tiny_model(task="recon", t_length=1)
    assert pred.decoder.skips and not recon.decoder.skips
    # the recon upsampling layers keep their width
    assert recon.decoder.up4[0].out_channels == 64 and pred.decoder.up4[0].out_channels == 32


def test_split_clip() -> None:
    clip = torch.arange(2 * 5 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 5, 3, 4, 4)
    pred = MNAD(ModelConfig(image_size=32, width=8))
    inputs, target = pred.split_clip(clip)
    assert inputs.shape == (2, 12, 4, 4)
    torch.testing.assert_close(inputs[:, 3:6], clip[:, 1])  # oldest first, stacked on channels
    torch.testing.assert_close(target, clip[:, 4])
    recon = MNAD(ModelConfig(task="recon", t_length=1, image_size=32, width=8))
    one = clip[:, :1]
    inputs, target = recon.split_clip(one)
    torch.testing.assert_close(inputs, one[:, 0])
    torch.testing.assert_close(target, one[:, 0])


# ----------------------------------------------------------------------------------------------------- sizes


def test_full_size_pred_parameter_count() -> None:
    model = MNAD(ModelConfig(task="pred", t_length=5, width=64, memory=True))  # built, never run at 256x256
    total = n_params(model)
    assert abs(total - 15.65e6) / 15.65e6 < 0.01
    assert abs(n_params(model.encoder) - 4.69e6) / 4.69e6 < 0.01
    assert abs(n_params(model.decoder) - 10.96e6) / 10.96e6 < 0.01
    assert model.memory.items.shape == (10, 512)


def test_full_size_recon_parameter_count() -> None:
    model = MNAD(ModelConfig(task="recon", t_length=1, width=64, memory=True))
    assert abs(n_params(model) - 17.20e6) / 17.20e6 < 0.01
    assert abs(n_params(model.decoder) - 12.51e6) / 12.51e6 < 0.01


def test_without_memory_first_decoder_conv_is_512_to_512() -> None:
    with_memory = MNAD(ModelConfig(width=64))
    without = MNAD(ModelConfig(width=64, memory=False))
    # Basic(1024, 512) -> Basic(512, 512): the first conv loses 512 * 512 * 9 weights
    assert n_params(with_memory) - n_params(without) == 512 * 512 * 9


def test_encoder_decoder_standalone_shapes() -> None:
    enc, dec = Encoder(6, 4), Decoder(32, 3, 4, skips=True)
    features, skips = enc(torch.zeros(1, 6, 16, 16))
    assert features.shape == (1, 32, 2, 2)
    assert [s.shape[1:] for s in skips] == [(4, 16, 16), (8, 8, 8), (16, 4, 4)]
    assert dec(features, skips).shape == (1, 3, 16, 16)


# ----------------------------------------------------------------------------------------------------- losses


class _Tiny(torch.nn.Module):
    """Just enough of an MNAD for mnad_loss: a memory (or none)."""

    def __init__(self, items: torch.Tensor | None) -> None:
        super().__init__()
        if items is None:
            self.memory = None
        else:
            from mnad.model import Memory

            self.memory = Memory(items.shape[0], items.shape[1])
            self.memory.items.copy_(items)


def test_compactness_and_separateness_by_hand() -> None:
    # C = 2; items at 0, 90 and 180 degrees.
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    q1 = torch.tensor([0.8, 0.6])  # nearest p0 (0.8), second p1 (0.6)
    q2 = torch.tensor([-0.6, 0.8])  # nearest p1 (0.8), second p2 (0.6)
    queries = torch.stack([q1, q2])
    model = _Tiny(items)
    compact, separate = feature_losses(queries, model.memory.items)
    # compactness: ||q1 - p0||^2 = 0.04 + 0.36 = 0.4; ||q2 - p1||^2 = 0.36 + 0.04 = 0.4; mean over N*C = 0.8 / 4
    assert compact.item() == pytest.approx(0.2, abs=1e-6)
    # separateness: ||q - pos|| = sqrt(0.4); ||q1 - p1|| = sqrt(0.64 + 0.16) = sqrt(0.8); ||q2 - p2|| = sqrt(0.16 + 0.64)
    hinge = max(math.sqrt(0.4) - math.sqrt(0.8) + 1.0, 0.0)
    assert separate.item() == pytest.approx(hinge, abs=1e-5)


def test_separateness_hinge_is_zero_when_far_from_second_item() -> None:
    items = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    queries = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0]])
    compact, separate = feature_losses(queries, _Tiny(items).memory.items)
    # q1 = p0 exactly: d_pos = 0; second nearest p2 (0 > -1): d_neg = sqrt(2): hinge max(0 - 1.414 + 1, 0) = 0
    # q2: nearest p0 (0.6), second p2 (0.0): d_pos = sqrt(0.16 + 0.64) = sqrt(0.8); d_neg = sqrt(0.36+0.64+1) = sqrt(2)
    hinge2 = math.sqrt(0.8) - math.sqrt(2.0) + 1.0
    assert separate.item() == pytest.approx(hinge2 / 2, abs=1e-5)
    assert compact.item() == pytest.approx((0.0 + 0.8) / 6, abs=1e-6)


def test_total_loss_combines_terms_with_lambdas() -> None:
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    queries = torch.tensor([[[0.8, 0.6], [-0.6, 0.8]]])  # (B=1, K=2, C=2)
    frame = torch.tensor([[[[0.5, -0.5], [0.0, 1.0]]]])
    target = torch.tensor([[[[0.0, 0.0], [0.0, 0.0]]]])
    frame_mse = (0.25 + 0.25 + 0.0 + 1.0) / 4
    model = _Tiny(items)
    losses = mnad_loss(model, MNADOutput(frame=frame, queries=queries), target, 0.1, 0.3)  # type: ignore[arg-type]
    hinge = math.sqrt(0.4) - math.sqrt(0.8) + 1.0
    assert losses.frame.item() == pytest.approx(frame_mse)
    assert losses.compact.item() == pytest.approx(0.2, abs=1e-6)
    assert losses.separate.item() == pytest.approx(hinge, abs=1e-5)
    assert losses.total.item() == pytest.approx(frame_mse + 0.1 * 0.2 + 0.3 * hinge, abs=1e-5)
    floats = losses.as_floats()
    assert set(floats) == {"total", "frame", "compact", "separate"}


def test_total_loss_without_memory_is_frame_mse_only() -> None:
    frame = torch.tensor([[[[0.5, -0.5], [0.0, 1.0]]]])
    target = torch.zeros_like(frame)
    queries = torch.tensor([[[0.8, 0.6], [-0.6, 0.8]]])
    losses = mnad_loss(_Tiny(None), MNADOutput(frame=frame, queries=queries), target, 0.1, 0.1)  # type: ignore[arg-type]
    assert losses.total.item() == pytest.approx(1.5 / 4)
    assert losses.compact.item() == 0 and losses.separate.item() == 0


def test_losses_use_items_before_the_update() -> None:
    # mnad_loss reads the current items; the training loop updates them only afterwards.
    model = tiny_model()
    x = torch.rand(2, 12, 32, 32) * 2 - 1
    out = model(x)
    before = mnad_loss(model, out, torch.zeros(2, 3, 32, 32), 0.1, 0.1)
    model.memory.update(out.queries.detach().reshape(-1, 64))
    after = mnad_loss(model, out, torch.zeros(2, 3, 32, 32), 0.1, 0.1)
    assert after.compact.item() < before.compact.item()  # the items moved towards the queries


def test_query_stride_is_the_encoders() -> None:
    """ScoringStep's grid of queries (patch D's regions) comes from QUERY_STRIDE, which must be the encoder's own."""
    from mnad.model.unet import QUERY_STRIDE

    features, _ = Encoder(3, 8)(torch.zeros(1, 3, 48, 64))
    assert features.shape[-2:] == (48 // QUERY_STRIDE, 64 // QUERY_STRIDE)


def test_an_fp64_model_runs_in_fp64() -> None:
    """The queries were cast to fp32 whatever the model's dtype, so an fp64 model (a reference check of the memory
    maths in double precision) failed in the read: fp32 queries against fp64 items."""
    torch.manual_seed(0)
    config = ModelConfig(width=4, image_size=32)
    model = MNAD(config).double()
    out = model(torch.rand(1, config.channels * config.input_frames, 32, 32, dtype=torch.float64))
    assert out.queries.dtype == torch.float64 and out.frame.dtype == torch.float64
    assert torch.allclose(out.queries.norm(dim=-1), torch.ones(1, 16, dtype=torch.float64))
