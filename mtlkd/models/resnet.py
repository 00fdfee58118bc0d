"""DeepLabV3 for the CNN rows of the OKD paper's Table 3: a dilated ResNet backbone and an ASPP head.

Backbone: a timm ResNet built locally (no download), with the strides of the last stages replaced by
dilation (output stride 8, DeepLabV3's dense setting), returning the four stage maps
(layer1..layer4, B x C x h x w) as `blocks` and the last one as `out`.

Head (DeepLabV3, Chen et al. 2017, Sec. 3.3, as in the DeepLabV3 head of the MTL code bases the paper
follows): ASPP = one 1x1 convolution, three 3x3 atrous convolutions with rates (12, 24, 36) at output
stride 8 (the paper's (6, 12, 18) at output stride 16, doubled), and image pooling (global average,
1x1 convolution, upsampled); every branch `channels` wide with batch norm and ReLU; the concatenation
is projected by a 1x1 convolution (batch norm, ReLU, dropout), then a 3x3 convolution (batch norm,
ReLU) and a 1x1 classifier to the task's channels, upsampled bilinearly to the input size. One
deviation: the image-pooling branch has no batch norm (a bias instead), since batch norm over a 1x1 map
fails for a batch of one image in training.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mtlkd.errors import CheckpointError
from mtlkd.models.backbones import register_backbone
from mtlkd.models.config import ASPPConfig, ResNetConfig
from mtlkd.models.heads import register_head


@register_backbone("resnet")
class ResNetBackbone(nn.Module):
    """A dilated timm ResNet; `forward(x) -> (four stage maps, last map)`."""

    def __init__(self, config: ResNetConfig):
        super().__init__()
        import timm

        self.config = config
        variant, output_stride, img_size = config.variant, config.output_stride, config.img_size

        self.net = timm.create_model(
            variant, pretrained=False, features_only=True, output_stride=output_stride,
            out_indices=(1, 2, 3, 4), drop_path_rate=config.drop_path,
        )
        self.variant = variant
        self.output_stride = output_stride
        self.img_size = (int(img_size[0]), int(img_size[1]))
        self._feature_dims = list(self.net.feature_info.channels())
        self.out_dim = self._feature_dims[-1]  # channels of `out`, what the heads read
        self.depth = len(self._feature_dims)

    @property
    def feature_dims(self) -> list[int]:
        return list(self._feature_dims)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        blocks = list(self.net(x))
        return blocks, blocks[-1]

    def load_pretrained(self, path: str | Path) -> tuple[list[str], list[str]]:
        """Load a local timm ResNet checkpoint (safetensors) of the same variant; the classifier (`fc.`)
        is dropped. Returns (missing, unexpected) keys."""
        from safetensors.torch import load_file

        state = {k: v for k, v in load_file(str(path)).items() if not k.startswith("fc.")}
        own = self.net.state_dict()
        wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
        if wrong:
            raise CheckpointError(
                f"{path}: weights do not fit {self.variant} (e.g. {wrong[0]}: {tuple(state[wrong[0]].shape)} vs "
                f"{tuple(own[wrong[0]].shape)}); pass a timm {self.variant} checkpoint"
            )
        result = self.net.load_state_dict(state, strict=False)
        return list(result.missing_keys), list(result.unexpected_keys)


def _conv_bn_relu(cin: int, cout: int, kernel: int = 1, dilation: int = 1) -> nn.Sequential:
    padding = 0 if kernel == 1 else dilation
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1, three atrous 3x3, image pooling; concatenated and projected."""

    def __init__(self, cin: int, channels: int = 256, rates: tuple[int, ...] = (12, 24, 36), dropout: float = 0.5):
        super().__init__()
        self.branches = nn.ModuleList(
            [_conv_bn_relu(cin, channels, 1)] + [_conv_bn_relu(cin, channels, 3, r) for r in rates]
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, channels, 1), nn.ReLU(inplace=True))
        self.project = nn.Sequential(
            _conv_bn_relu(channels * (len(rates) + 2), channels, 1),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [branch(x) for branch in self.branches]
        outs.append(self.pool(x).expand(-1, -1, x.shape[-2], x.shape[-1]))
        return self.project(torch.cat(outs, dim=1))


@register_head("aspp")
class ASPPHead(nn.Module):
    """DeepLabV3 head: ASPP, 3x3 convolution, 1x1 classifier, bilinear upsampling to `size`."""

    def __init__(self, in_channels: int, out_channels: int, channels: int = 256,
                 rates: tuple[int, ...] = (12, 24, 36), dropout: float = 0.5):
        super().__init__()
        self.aspp = ASPP(in_channels, channels, tuple(rates), dropout)
        self.conv = _conv_bn_relu(channels, channels, 3)
        self.classifier = nn.Conv2d(channels, out_channels, 1)

    @classmethod
    def from_config(cls, config: ASPPConfig, backbone: nn.Module, out_channels: int) -> nn.Module:
        return cls(backbone.out_dim, out_channels, config.channels, config.rates, config.dropout)

    def forward(self, out: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
        """The task map at `size` (bilinear), or at the backbone's output stride when `size` is None."""
        x = self.classifier(self.conv(self.aspp(out)))
        if size is None:
            return x
        return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
