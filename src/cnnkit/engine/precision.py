"""Device and precision choices: which device, which autocast dtype, whether a grad scaler is needed."""
from __future__ import annotations

import contextlib
import functools

import torch

from ..registry import CnnkitError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise CnnkitError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CnnkitError(f"device {name!r} asked for, but no CUDA GPU is available here; use --device cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise CnnkitError("device 'mps' asked for, but Metal is not available here; use --device cpu")
    return dev


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (AVX512-BF16 or AMX), where bf16 autocast pays off."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `amp` on `device`, or None for full fp32."""
    if amp == "off":
        return None
    if device.type == "cuda":
        if amp == "fp16":
            return torch.float16
        if amp == "bf16" or torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16
    if device.type == "cpu":
        if amp == "fp16":
            raise CnnkitError("fp16 autocast is for GPUs; on the CPU use --amp bf16 or --amp off")
        if amp == "bf16" or cpu_has_bf16():
            return torch.bfloat16
        return None
    return None if amp == "auto" else {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, dtype: torch.dtype | None):
    """fp16 gradients underflow without loss scaling; bf16 and fp32 need none."""
    enabled = dtype == torch.float16 and device.type == "cuda"
    return torch.amp.GradScaler(device.type, enabled=enabled)
