"""Batch augmentation on the training device: random crop, flips, rotation, colour jitter,
random erasing, CutMix and MixUp -- the guide's [4] list, applied to whole batches.

The engine keeps images as uint8 until they reach the device and then runs, per step:

    x = images.float() / 255          # (B, C, H, W) in [0, 1]
    x, y = augment(x, y, generator)   # this module
    x = (x - mean) / std

Every operation here works on the whole batch at once (no Python loop over samples), on CPU and
CUDA, in contiguous or channels_last layout, and draws every random number from the
`torch.Generator` it is given (on the data's device), so that one generator seeded per epoch
replays an epoch exactly on resume. Choices worth knowing:

- crop: the batch is padded once with *reflect* padding (no black frame whose statistics the
  network could learn; needs `padding < H, W`) and each sample takes an H x W window at its own
  offset through a strided view of all windows -- one gather, no per-sample slicing.
- rotation: bilinear `affine_grid` + `grid_sample`, zero fill outside the source (black corners,
  torchvision's default); positive angles turn the picture counter-clockwise, as in torchvision.
- colour jitter: brightness, contrast, saturation in that fixed order, each factor uniform in
  [1-s, 1+s] per sample and each step clamped to [0, 1] (the formulas of torchvision's
  `adjust_*`); grey is the ITU-R 601 luma for 3 channels, the channel mean otherwise, so
  saturation is a no-op on 1-channel images.
- erase: random erasing (area 2-33% of the image, aspect 0.3-3.3), filled with the image's own
  per-channel mean so that the patch carries no signal but does not shift the statistics.
- CutMix / MixUp: one lambda ~ Beta(a, a) per batch, partners by a random permutation. CutMix's
  lambda is recomputed from the clipped box. Both are one `lerp` with a weight map, so the batch
  never leaves the device; the host reads a random number only when `mix_prob < 1` (the answer
  decides whether targets stay int64 labels or become soft (B, num_classes) targets).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Dict

import torch
import torch.nn.functional as F

from cnnkit.registry import CnnkitError, suggest

__all__ = [
    "AugmentConfig", "BatchAugment", "PRESETS", "parse_augment",
    "crop_windows", "rotate", "color_jitter", "erase_boxes", "sample_beta",
]

_PROBS = ("hflip", "vflip", "mix_prob", "erase")


@dataclass
class AugmentConfig:
    """What to do to each training batch; every default is "off". Values are checked on creation."""

    crop_padding: int = 0      # random crop after reflect-padding by this many pixels per side
    hflip: float = 0.0         # probability of a horizontal flip, per sample
    vflip: float = 0.0         # probability of a vertical flip, per sample
    rotation: float = 0.0      # max degrees: angle uniform in [-r, r] per sample
    color_jitter: float = 0.0  # s: brightness, contrast, saturation factors uniform in [1-s, 1+s]
    cutmix: float = 0.0        # Beta(a, a) parameter of CutMix's lambda; 0 = off
    mixup: float = 0.0         # Beta(a, a) parameter of MixUp's lambda; 0 = off
    mix_prob: float = 1.0      # probability that a batch is mixed (both on: CutMix or MixUp 50/50)
    erase: float = 0.0         # random erasing (cutout) probability, per sample

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise CnnkitError(f"augmentation {f.name} must be a number, got {v!r}")
        if self.crop_padding < 0 or self.crop_padding != int(self.crop_padding):
            raise CnnkitError(f"augmentation crop_padding must be a whole number >= 0, got {self.crop_padding}")
        self.crop_padding = int(self.crop_padding)
        for name in _PROBS:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise CnnkitError(f"augmentation {name} is a probability in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.rotation <= 180.0:
            raise CnnkitError(f"augmentation rotation is a max angle in [0, 180] degrees, got {self.rotation}")
        if not 0.0 <= self.color_jitter <= 1.0:
            raise CnnkitError(f"augmentation color_jitter is a strength in [0, 1], got {self.color_jitter}")
        for name in ("cutmix", "mixup"):
            if getattr(self, name) < 0:
                raise CnnkitError(f"augmentation {name} is a Beta parameter >= 0 (0 = off), got {getattr(self, name)}")

    @property
    def mixing(self) -> bool:
        return (self.cutmix > 0 or self.mixup > 0) and self.mix_prob > 0


PRESETS: Dict[str, AugmentConfig] = {
    "none": AugmentConfig(),
    # the classic CIFAR recipe: pad 4, random 32x32 crop, horizontal flip
    "light": AugmentConfig(crop_padding=4, hflip=0.5),
    # + random erasing (cutout) on a quarter of the images
    "standard": AugmentConfig(crop_padding=4, hflip=0.5, erase=0.25),
    # + colour jitter and a mixed batch every step (CutMix or MixUp, 50/50), as in modern recipes
    "strong": AugmentConfig(crop_padding=4, hflip=0.5, color_jitter=0.2, erase=0.25, cutmix=1.0, mixup=0.2),
}

# short names accepted in specs, besides the field names themselves
_ALIASES = {"crop": "crop_padding", "padding": "crop_padding", "jitter": "color_jitter", "color": "color_jitter",
            "rotate": "rotation", "cutout": "erase"}


def _key(name: str) -> str:
    names = [f.name for f in fields(AugmentConfig)]
    key = _ALIASES.get(name.strip().lower().replace("-", "_"), name.strip().lower().replace("-", "_"))
    if key not in names:
        raise suggest(name, names + list(_ALIASES), "augmentation option")
    return key


def _value(key: str, text) -> float:
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return text
    try:
        return float(str(text).strip())
    except ValueError:
        raise CnnkitError(f"augmentation {key} needs a number, got {text!r} (e.g. '{key}=0.5')") from None


def parse_augment(spec: "str | dict | AugmentConfig | None") -> AugmentConfig:
    """An `AugmentConfig` from None / "none", a preset name, a dict of options, or a compact
    string such as "crop=4,hflip=0.5,cutmix=1.0". A string may start with a preset and override
    it: "standard,erase=0,rotation=10". Short names: crop, jitter, rotate, cutout."""
    if spec is None:
        return AugmentConfig()
    if isinstance(spec, AugmentConfig):
        return replace(spec)  # a copy, validated again
    if isinstance(spec, dict):
        items = list(spec.items())
        base = AugmentConfig()
    elif isinstance(spec, str):
        parts = [p.strip() for p in spec.split(",") if p.strip()]
        base = AugmentConfig()
        if parts and "=" not in parts[0]:
            name = parts.pop(0).lower()
            if name not in PRESETS:
                raise suggest(name, PRESETS, "augmentation preset")
            base = PRESETS[name]
        items = []
        for p in parts:
            if "=" not in p:
                raise CnnkitError(f"augmentation spec part {p!r} is not 'key=value'; a preset name may only come first "
                                  f"(presets: {', '.join(PRESETS)})")
            k, v = p.split("=", 1)
            items.append((k, v))
    else:
        raise CnnkitError(f"augmentation must be a preset name, 'key=value,...' string or mapping, got {type(spec).__name__}")
    values = asdict(base)
    for k, v in items:
        key = _key(str(k))
        values[key] = _value(key, v)
    return AugmentConfig(**values)


# ----------------------------------------------------------------------------- functional ops
# Each op takes its per-sample parameters explicitly, so that tests (and other code) can drive
# them with known values; `BatchAugment` only samples the parameters.

def crop_windows(x: torch.Tensor, padding: int, top: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    """Reflect-pad `x` (B, C, H, W) by `padding` and take, for sample b, the H x W window whose
    corner is (top[b], left[b]) in the padded image; offsets (B,) int64 in [0, 2 * padding]."""
    B, C, H, W = x.shape
    if padding >= H or padding >= W:
        raise CnnkitError(f"crop_padding {padding} needs images larger than {padding} pixels (reflect padding); "
                          f"got {H}x{W}: lower crop_padding")
    xp = F.pad(x, (padding,) * 4, mode="reflect")                  # (B, C, H+2p, W+2p)
    windows = xp.unfold(2, H, 1).unfold(3, W, 1)                    # (B, C, 2p+1, 2p+1, H, W), a view
    return windows[torch.arange(B, device=x.device), :, top, left]  # (B, C, H, W): one gather


def _select(a: torch.Tensor, b: torch.Tensor, take_b: torch.Tensor) -> torch.Tensor:
    """`where(take_b, b, a)` as a lerp with a 0/1 weight: exact at 0 and 1 (ATen's lerp is
    `end - (end - self) * (1 - w)` for w >= 0.5) and several times faster than `where` on CPU."""
    return torch.lerp(a, b, take_b.to(a.dtype))


def _flip_where(x: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    return _select(x, x.flip(dim), mask.view(-1, 1, 1, 1))    # mask (B,): flip those samples


def rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image of `x` (B, C, H, W) about its centre by `degrees` (B,), counter-clockwise
    for positive angles; bilinear, zero outside the source. Non-square images are rotated in
    pixel units (the normalized grid is rescaled by the aspect ratio), so shapes do not shear."""
    B, C, H, W = x.shape
    a = torch.deg2rad(degrees.to(device=x.device, dtype=torch.float32))
    cos, sin = torch.cos(a), torch.sin(a)
    # theta maps output grid coords to input grid coords, both normalized to [-1, 1] per axis
    theta = torch.stack([torch.stack([cos, -sin * H / W, torch.zeros_like(a)], -1),
                         torch.stack([sin * W / H, cos, torch.zeros_like(a)], -1)], 1)  # (B, 2, 3)
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    grid = F.affine_grid(theta.to(dtype), [B, C, H, W], align_corners=False)            # (B, H, W, 2)
    out = F.grid_sample(x.to(dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.to(x.dtype)


_LUMA = (0.2989, 0.587, 0.114)  # ITU-R 601 weights, as torchvision's rgb_to_grayscale


def _grey(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) grey image: luma for RGB, else the channel mean."""
    if x.shape[1] == 3:
        r, g, b = x.unbind(1)
        return r.mul(_LUMA[0]).add_(g, alpha=_LUMA[1]).add_(b, alpha=_LUMA[2]).unsqueeze(1)
    return x.mean(1, keepdim=True)


def color_jitter(x: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor,
                 saturation: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast and saturation with per-sample factors (B,) each (1 = unchanged):
    x*b; blend with the image's mean grey; blend with its grey image. Clamped to [0, 1] after each."""
    v = lambda t: t.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)  # noqa: E731
    b, c, s = v(brightness), v(contrast), v(saturation)
    x = (x * b).clamp_(0, 1)
    cm = x.mean((2, 3))                                            # (B, C): mean grey from channel means
    mean = (cm @ cm.new_tensor(_LUMA) if x.shape[1] == 3 else cm.mean(1)).view(-1, 1, 1, 1)
    x = torch.lerp(mean, x, c).clamp_(0, 1)
    if x.shape[1] > 1:                                             # grey of a grey image is itself
        x = torch.lerp(_grey(x), x, s).clamp_(0, 1)
    return x


def erase_boxes(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, height: torch.Tensor,
                width: torch.Tensor) -> torch.Tensor:
    """Fill box [top, top+height) x [left, left+width) of each sample (all (B,) int64; height 0 =
    untouched) with that image's per-channel mean."""
    B, C, H, W = x.shape
    v = lambda t: t.view(B, 1, 1, 1)  # noqa: E731
    rows = torch.arange(H, device=x.device).view(1, 1, H, 1)
    cols = torch.arange(W, device=x.device).view(1, 1, 1, W)
    box = ((rows >= v(top)) & (rows < v(top + height))) & ((cols >= v(left)) & (cols < v(left + width)))  # (B,1,H,W)
    return _select(x, x.mean((2, 3), keepdim=True).expand_as(x), box)


def _log_gamma(alpha: float, n: int, g, device, tries: int = 16) -> torch.Tensor:
    """log of n Gamma(alpha, 1) samples by Marsaglia & Tsang's method, with `tries` candidates
    drawn at once per sample (acceptance >= 95% each, so all failing is ~1e-21) and the first
    accepted one kept: a fixed number of draws, no host round trip, reproducible."""
    boost = alpha < 1  # Gamma(a) = Gamma(a + 1) * U^(1/a)
    d = (alpha + 1 if boost else alpha) - 1 / 3
    c = 1 / math.sqrt(9 * d)
    z = torch.randn(n, tries, generator=g, device=device, dtype=torch.float64)
    u = torch.rand(n, tries, generator=g, device=device, dtype=torch.float64)
    v = (1 + c * z) ** 3
    logv = torch.log(v.clamp_min(1e-300))
    ok = (v > 0) & (torch.log(u) < 0.5 * z * z + d - d * v + d * logv)
    first = torch.argmax(ok.to(torch.uint8), dim=1, keepdim=True)   # first accepted candidate
    logx = math.log(d) + logv.gather(1, first).squeeze(1)
    if boost:
        logx = logx + torch.log(torch.rand(n, generator=g, device=device, dtype=torch.float64)) / alpha
    return logx


def sample_beta(alpha: float, n: int, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """n samples of Beta(alpha, alpha) (float32, on `device`) from `generator`. torch.distributions
    cannot take a generator, so this goes through two Gammas: X / (X + Y) = sigmoid(log X - log Y),
    in log space so that small alphas (mass near 0 and 1) do not underflow to 0 / 0."""
    lx = _log_gamma(alpha, n, generator, device)
    ly = _log_gamma(alpha, n, generator, device)
    return torch.sigmoid(lx - ly).float()


# ----------------------------------------------------------------------------- the module

class BatchAugment(torch.nn.Module):
    """Augment a float batch (B, C, H, W) in [0, 1] with class labels (B,), all on one device.

    Order: crop -> flips -> rotation -> colour jitter -> erase -> CutMix / MixUp. No gradients
    are tracked (this is data preparation). Returns `x` with the input's shape, dtype, device
    and memory format, and `y` unchanged (int64) unless the batch was mixed, then float soft
    targets (B, num_classes) whose rows sum to 1.
    """

    def __init__(self, cfg: AugmentConfig, num_classes: int):
        super().__init__()
        self.cfg = parse_augment(cfg)
        self.num_classes = int(num_classes)
        if self.cfg.mixing and self.num_classes < 1:
            raise CnnkitError(f"CutMix/MixUp need num_classes >= 1, got {num_classes}")

    @property
    def active(self) -> bool:
        c = self.cfg
        return bool(c.crop_padding or c.hflip or c.vflip or c.rotation or c.color_jitter or c.erase or c.mixing)

    def extra_repr(self) -> str:
        on = {k: v for k, v in asdict(self.cfg).items() if v != getattr(AugmentConfig, k)}
        return ", ".join(f"{k}={v}" for k, v in on.items()) + f", num_classes={self.num_classes}"

    @torch.no_grad()
    def forward(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 4 or not x.is_floating_point():
            raise CnnkitError(f"batch augmentation expects float images (B, C, H, W), got {tuple(x.shape)} {x.dtype}")
        if generator is not None and generator.device.type != x.device.type:
            raise CnnkitError(f"the augmentation generator is on {generator.device} but the batch is on {x.device}: "
                              f"create it with torch.Generator(device=...) on the batch's device")
        cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        c, g, dev = self.cfg, generator, x.device
        B, C, H, W = x.shape
        rand = lambda *shape: torch.rand(*shape, generator=g, device=dev)  # noqa: E731

        if c.crop_padding:
            top, left = torch.randint(0, 2 * c.crop_padding + 1, (2, B), generator=g, device=dev)
            x = crop_windows(x, c.crop_padding, top, left)
        if c.hflip:
            x = _flip_where(x, rand(B) < c.hflip, -1)
        if c.vflip:
            x = _flip_where(x, rand(B) < c.vflip, -2)
        if c.rotation:
            x = rotate(x, (rand(B) * 2 - 1) * c.rotation)
        if c.color_jitter:
            f = 1 + (rand(3, B) * 2 - 1) * c.color_jitter             # (3, B) factors in [1-s, 1+s]
            x = color_jitter(x, f[0], f[1], f[2])
        if c.erase:
            x = self._erase(x, g)
        if c.mixing:
            x, y = self._mix(x, y, g)
        return (x.contiguous(memory_format=torch.channels_last) if cl else x.contiguous()), y

    def _erase(self, x: torch.Tensor, g) -> torch.Tensor:
        """Random erasing: per sample with probability `erase`, a box of 2-33% of the area with
        aspect ratio in [0.3, 3.3] (log-uniform), clipped to the image, at a uniform position."""
        B, C, H, W = x.shape
        r = torch.rand(5, B, generator=g, device=x.device)
        area = (0.02 + r[0] * 0.31) * H * W
        aspect = torch.exp(math.log(0.3) + r[1] * 2 * math.log(1 / 0.3))
        h = torch.sqrt(area * aspect).round().clamp(1, H).long()
        w = torch.sqrt(area / aspect).round().clamp(1, W).long()
        h = torch.where(r[4] < self.cfg.erase, h, torch.zeros_like(h))
        top = (r[2] * (H - h + 1)).long()
        left = (r[3] * (W - w + 1)).long()
        return erase_boxes(x, top, left, h, w)

    def _mix(self, x: torch.Tensor, y: torch.Tensor, g) -> tuple[torch.Tensor, torch.Tensor]:
        """CutMix or MixUp with one lambda per batch. Both are `lerp(x[perm], x, M)` with a weight
        map M (1, 1, H, W): 0 inside the CutMix box and 1 outside, or the MixUp lambda everywhere;
        then lambda = mean(M) exactly (the kept fraction), and lerp is exact at weights 0 and 1."""
        c, dev = self.cfg, x.device
        B, C, H, W = x.shape
        if y.shape != (B,) or y.is_floating_point():
            raise CnnkitError(f"CutMix/MixUp need integer class labels of shape ({B},), got {tuple(y.shape)} {y.dtype}; "
                              f"turn cutmix and mixup off for this task")
        if c.mix_prob < 1 and torch.rand((), generator=g, device=dev).item() >= c.mix_prob:
            return x, y  # not mixed: targets stay labels (the one host read, only when mix_prob < 1)
        perm = torch.randperm(B, generator=g, device=dev)
        both = c.cutmix > 0 and c.mixup > 0
        if both:
            use_cut = torch.rand((), generator=g, device=dev) < 0.5  # stays on the device: no branch on it
            lam = torch.where(use_cut, sample_beta(c.cutmix, 1, g, dev), sample_beta(c.mixup, 1, g, dev))
        else:
            lam = sample_beta(c.cutmix or c.mixup, 1, g, dev)
        lam = lam.to(x.dtype)
        if c.cutmix:  # box: side ratio sqrt(1 - lam), centre uniform, clipped to the image
            u = torch.rand(2, generator=g, device=dev)
            cy, cx = (u[0] * H).floor(), (u[1] * W).floor()
            r = torch.sqrt(1 - lam.float())
            hh, hw = (r * H).floor() // 2, (r * W).floor() // 2
            rows = torch.arange(H, device=dev).view(H, 1)
            cols = torch.arange(W, device=dev).view(1, W)
            keep = ~((rows >= cy - hh) & (rows < cy + hh) & (cols >= cx - hw) & (cols < cx + hw))  # (H, W)
            m = torch.where(use_cut, keep.to(x.dtype), lam) if both else keep.to(x.dtype)
        else:
            m = lam.expand(H, W)
        m = m.view(1, 1, H, W)
        x = torch.lerp(x.index_select(0, perm), x, m)
        lam = m.float().mean()                                     # CutMix: recomputed from the box
        tdtype = torch.promote_types(x.dtype, torch.float32)
        one = F.one_hot(y.long(), self.num_classes).to(tdtype)    # (B, K)
        return x, torch.lerp(one.index_select(0, perm), one, lam.to(tdtype))
