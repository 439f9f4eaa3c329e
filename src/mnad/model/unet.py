"""The U-Net encoder and the two decoders of MNAD (docs/method.md, section 1).

All convolutions are 3x3 with padding 1. With width w the stages have w, 2w, 4w, 8w channels; w = 64 is the paper's.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights


def conv_block(c_in: int, c_out: int, *, last_activation: bool = True) -> nn.Sequential:
    """Conv-BN-ReLU-Conv(-BN-ReLU). The encoder's last block drops the final BN+ReLU so queries can be negative."""
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1),
    ]
    if last_activation:
        layers += [nn.BatchNorm2d(c_out), nn.ReLU()]
    return nn.Sequential(*layers)


def upsample(c_in: int, c_out: int) -> nn.Sequential:
    """Transposed conv that doubles H and W, then BN-ReLU."""
    return nn.Sequential(
        nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    )


def output_head(c_in: int, c_out: int, width: int) -> nn.Sequential:
    """Two conv-BN-ReLU then a conv to image channels and tanh: frames live in [-1, 1]."""
    return nn.Sequential(
        nn.Conv2d(c_in, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, c_out, 3, padding=1),
        nn.Tanh(),
    )


QUERY_STRIDE = 8  # the encoder's three 2x2 poolings: one query for each 8x8 pixels of the frame


class Encoder(nn.Module):
    """Frames (B, in_ch, H, W) -> raw query map (B, 8w, H/QUERY_STRIDE, W/QUERY_STRIDE) and the three pre-pool skip features."""

    def __init__(self, in_channels: int, width: int = 64) -> None:
        super().__init__()
        w = width
        self.stage1 = conv_block(in_channels, w)
        self.stage2 = conv_block(w, 2 * w)
        self.stage3 = conv_block(2 * w, 4 * w)
        self.stage4 = conv_block(4 * w, 8 * w, last_activation=False)
        self.pool = nn.MaxPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skip1 = self.stage1(x)
        skip2 = self.stage2(self.pool(skip1))
        skip3 = self.stage3(self.pool(skip2))
        features = self.stage4(self.pool(skip3))
        return features, [skip1, skip2, skip3]


class Decoder(nn.Module):
    """Query map (+ memory read) -> frame. With skips it is the U-Net of the prediction task; without, the
    reconstruction decoder, whose upsampling layers keep their width so each block sees the same input size."""

    def __init__(self, in_channels: int, out_channels: int, width: int = 64, *, skips: bool = True) -> None:
        super().__init__()
        w = width
        self.skips = skips
        self.bottleneck = conv_block(in_channels, 8 * w)
        if skips:  # the upsampled map is concatenated with the encoder skip of the same width
            self.up4, self.up3, self.up2 = upsample(8 * w, 4 * w), upsample(4 * w, 2 * w), upsample(2 * w, w)
        else:
            self.up4, self.up3, self.up2 = upsample(8 * w, 8 * w), upsample(4 * w, 4 * w), upsample(2 * w, 2 * w)
        self.stage3 = conv_block(8 * w, 4 * w)
        self.stage2 = conv_block(4 * w, 2 * w)
        self.head = output_head(2 * w, out_channels, w)

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        skip1, skip2, skip3 = skips
        x = self.bottleneck(x)
        x = self.up4(x)
        x = self.stage3(torch.cat([skip3, x], dim=1) if self.skips else x)
        x = self.up3(x)
        x = self.stage2(torch.cat([skip2, x], dim=1) if self.skips else x)
        x = self.up2(x)
        return self.head(torch.cat([skip1, x], dim=1) if self.skips else x)


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every BatchNorm2d that follows a (transposed) convolution into it, in place; the module must be in eval
    mode. At inference BatchNorm is a fixed affine map, so this is the same function (up to float rounding) with one
    pass over each feature map instead of two. The convolution gets new weight and bias tensors (its old ones are not
    copied first), so a module whose tensors are shared with another (``inference_copy``) leaves that one untouched."""
    for block in module.modules():
        if not isinstance(block, nn.Sequential):
            continue
        for i in range(len(block) - 1):
            conv, norm = block[i], block[i + 1]
            if isinstance(norm, nn.BatchNorm2d) and isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)):
                if conv.training or norm.training:
                    raise ValueError("fold_batchnorm: the module must be in eval mode")
                conv.weight, conv.bias = fuse_conv_bn_weights(conv.weight, conv.bias, norm.running_mean, norm.running_var,
                                                              norm.eps, norm.weight, norm.bias,
                                                              transpose=isinstance(conv, nn.ConvTranspose2d))
                block[i + 1] = nn.Identity()
    return module
