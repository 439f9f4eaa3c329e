"""A plain reference of the MNAD prediction network, written the way research code usually is.

fp32, NCHW, eager; the memory items are a tensor passed in and out of ``forward``; the memory update is a Python
loop over the items with a softmax over all queries (method doc 1 and 2.4); test-time scoring runs without
``torch.no_grad`` and reads every per-frame number back with ``.item()``. It is the baseline that
``benchmarks/speed.py`` measures mnad against, so it computes the same function as ``mnad.model.MNAD``: its weights
are loaded from an mnad state dict by ``load_mnad_state`` (and speed.py checks that both give the same PSNR).

Self-contained on purpose: it imports nothing from mnad.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Basic(nn.Module):
    """Conv-BN-ReLU-Conv(-BN-ReLU); ``last=False`` drops the final BN+ReLU (the encoder's last block)."""

    def __init__(self, c_in: int, c_out: int, last: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.last = last
        if last:
            self.bn2 = nn.BatchNorm2d(c_out)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.conv2(x)
        if self.last:
            x = F.relu(self.bn2(x))
        return x


class Upsample(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.deconv = nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x):
        return F.relu(self.bn(self.deconv(x)))


class Gen(nn.Module):
    def __init__(self, c_in: int, c_out: int, nc: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, nc, 3, 1, 1)
        self.bn1 = nn.BatchNorm2d(nc)
        self.conv2 = nn.Conv2d(nc, nc, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(nc)
        self.conv3 = nn.Conv2d(nc, c_out, 3, 1, 1)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return torch.tanh(self.conv3(x))


class Encoder(nn.Module):
    def __init__(self, in_ch: int = 12) -> None:
        super().__init__()
        self.conv1 = Basic(in_ch, 64)
        self.conv2 = Basic(64, 128)
        self.conv3 = Basic(128, 256)
        self.conv4 = Basic(256, 512, last=False)

    def forward(self, x):
        skip1 = self.conv1(x)
        skip2 = self.conv2(F.max_pool2d(skip1, 2, 2))
        skip3 = self.conv3(F.max_pool2d(skip2, 2, 2))
        fea = self.conv4(F.max_pool2d(skip3, 2, 2))
        return fea, skip1, skip2, skip3


class Decoder(nn.Module):
    def __init__(self, out_ch: int = 3) -> None:
        super().__init__()
        self.conv = Basic(1024, 512)
        self.up4 = Upsample(512, 256)
        self.deconv3 = Basic(512, 256)
        self.up3 = Upsample(256, 128)
        self.deconv2 = Basic(256, 128)
        self.up2 = Upsample(128, 64)
        self.deconv1 = Gen(128, out_ch, 64)

    def forward(self, x, skip1, skip2, skip3):
        x = self.up4(self.conv(x))
        x = self.up3(self.deconv3(torch.cat((skip3, x), dim=1)))
        x = self.up2(self.deconv2(torch.cat((skip2, x), dim=1)))
        return self.deconv1(torch.cat((skip1, x), dim=1))


class Memory(nn.Module):
    """No parameters: items (M, C) come in and go out. Queries are (B, C, H, W) feature maps."""

    def get_score(self, items, query):
        score = torch.matmul(query, items.t())  # (N, M)
        return F.softmax(score, dim=0), F.softmax(score, dim=1)  # over all queries, over items

    def read(self, query, items):
        _, read_weights = self.get_score(items, query)
        return torch.matmul(read_weights.detach(), items)

    def update(self, query, items):
        """p_m <- normalize(p_m + sum_{k in U_m} v_km / max_k' v_k'm * q_k), the max over all queries (published code)."""
        score_query, score_item = self.get_score(items, query)
        _, nearest = torch.topk(score_item, 1, dim=1)
        delta = torch.zeros_like(items)
        for m in range(items.size(0)):
            idx = torch.nonzero(nearest.squeeze(1) == m)
            if idx.size(0) != 0:
                weights = score_query[idx, m] / torch.max(score_query[:, m])
                delta[m] = torch.sum(weights * query[idx.squeeze(1)], dim=0)
        return F.normalize(items + delta, dim=1).detach()

    def losses(self, query, items):
        _, score_item = self.get_score(items, query)
        _, top2 = torch.topk(score_item, 2, dim=1)
        pos, neg = items[top2[:, 0]].detach(), items[top2[:, 1]].detach()
        compact = nn.MSELoss()(query, pos)
        separate = nn.TripletMarginLoss(margin=1.0)(query, pos, neg)
        return compact, separate

    def forward(self, fea, items, train=True):
        b, c, h, w = fea.size()
        query = F.normalize(fea, dim=1)
        flat = query.permute(0, 2, 3, 1).reshape(b * h * w, c)
        read = self.read(flat, items).view(b, h, w, c).permute(0, 3, 1, 2)
        updated = torch.cat((query, read), dim=1)
        if train:
            compact, separate = self.losses(flat, items)
            items = self.update(flat, items)
            return updated, items, compact, separate
        _, score_item = self.get_score(items, flat)  # test: the distance to the nearest item (D)
        _, nearest = torch.topk(score_item, 1, dim=1)
        compact = nn.MSELoss()(flat, items[nearest.squeeze(1)].detach())
        return updated, items, compact


class ConvAE(nn.Module):
    """MNAD, prediction task: 4 frames stacked on channels (12 ch) -> the next frame."""

    def __init__(self, n_channel: int = 3, t_length: int = 5) -> None:
        super().__init__()
        self.encoder = Encoder(n_channel * (t_length - 1))
        self.decoder = Decoder(n_channel)
        self.memory = Memory()

    def forward(self, x, items, train=True):
        fea, skip1, skip2, skip3 = self.encoder(x)
        if train:
            updated, items, compact, separate = self.memory(fea, items, True)
            return self.decoder(updated, skip1, skip2, skip3), fea, items, compact, separate
        updated, items, compact = self.memory(fea, items, False)
        return self.decoder(updated, skip1, skip2, skip3), fea, items, compact


# ---- test-time scoring, per frame ------------------------------------------------------------------------------


def psnr(mse):
    return 10 * math.log10(1 / mse)


def point_score(outputs, imgs):
    """Weighted regular score E_t on frames mapped to [0, 1], per element (published code)."""
    error = (outputs + 1) / 2 - (imgs + 1) / 2
    error = error**2
    weight = 1 - torch.exp(-error)
    return (torch.sum(weight * error) / torch.sum(weight)).item()


def frames_to_tensor(frames):
    """uint8 (T, H, W, C) -> (1, T*C, H, W) float in [-1, 1]."""
    x = torch.from_numpy(np.asarray(frames, dtype=np.float32) / 127.5 - 1.0)
    return x.permute(0, 3, 1, 2).reshape(1, -1, x.shape[1], x.shape[2])


def score_frame(model, clip, items, gamma=0.01):
    """One test frame as research code scores it: no torch.no_grad, numbers read back with .item().

    ``clip``: (1, 15, H, W), four input frames then the target. Returns (psnr, D, E_t, updated, items).
    """
    x, gt = clip[:, :12], clip[:, 12:]
    outputs, fea, items_out, compact = model(x, items, train=False)
    mse = torch.mean(((outputs + 1) / 2 - (gt + 1) / 2) ** 2).item()
    p = psnr(mse)
    d = compact.item()
    e = point_score(outputs, gt)
    updated = e < gamma
    if updated:
        query = F.normalize(fea, dim=1)
        query = query.permute(0, 2, 3, 1).reshape(-1, query.size(1))
        items = model.memory.update(query, items)
    return p, d, e, updated, items


def train_step(model, optimizer, clip, items, lambda_compact=0.1, lambda_separate=0.1):
    """One training iteration of the published recipe; returns (loss, items after the update)."""
    x, gt = clip[:, :12], clip[:, 12:]
    outputs, _, items, compact, separate = model(x, items, True)
    loss = torch.mean((outputs - gt) ** 2) + lambda_compact * compact + lambda_separate * separate
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item(), items


# ---- weights from mnad -----------------------------------------------------------------------------------------


def _basic_keys(mine: str, theirs: str, last: bool = True) -> dict[str, str]:
    pairs = {"conv1": "0", "bn1": "1", "conv2": "3"} | ({"bn2": "4"} if last else {})
    return {f"{mine}.{a}": f"{theirs}.{b}" for a, b in pairs.items()}


def key_map() -> dict[str, str]:
    """Module prefix here -> module prefix in mnad.model.MNAD (prediction task, with memory)."""
    prefixes: dict[str, str] = {}
    for i in (1, 2, 3):
        prefixes |= _basic_keys(f"encoder.conv{i}", f"encoder.stage{i}")
    prefixes |= _basic_keys("encoder.conv4", "encoder.stage4", last=False)
    prefixes |= _basic_keys("decoder.conv", "decoder.bottleneck")
    prefixes |= _basic_keys("decoder.deconv3", "decoder.stage3")
    prefixes |= _basic_keys("decoder.deconv2", "decoder.stage2")
    for i in (4, 3, 2):
        prefixes |= {f"decoder.up{i}.deconv": f"decoder.up{i}.0", f"decoder.up{i}.bn": f"decoder.up{i}.1"}
    prefixes |= {f"decoder.deconv1.{a}": f"decoder.head.{b}" for a, b in
                 {"conv1": "0", "bn1": "1", "conv2": "3", "bn2": "4", "conv3": "6"}.items()}
    return prefixes


def load_mnad_state(model: ConvAE, state: dict[str, torch.Tensor]) -> torch.Tensor:
    """Load an mnad ``MNAD.state_dict()`` into ``model`` (strict: every tensor on both sides is used);
    returns the memory items (``memory.items``), which this model keeps outside."""
    prefixes = key_map()
    mapped = {}
    for key in model.state_dict():
        prefix, _, leaf = key.rpartition(".")
        mapped[key] = state[f"{prefixes[prefix]}.{leaf}"]
    model.load_state_dict(mapped, strict=True)
    used = {f"{prefixes[k.rpartition('.')[0]]}.{k.rpartition('.')[2]}" for k in mapped} | {"memory.items"}
    unused = set(state) - used
    if unused:
        raise KeyError(f"mnad tensors with no place in the reference model: {sorted(unused)[:5]}")
    return state["memory.items"].clone()
