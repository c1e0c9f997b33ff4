"""The machine a figure was measured on: CPU, cores, threads, load, versions, accelerator.

Every benchmark prints `machine()`; `cnnkit bench` also warns with `load_warning` when other
processes hold the cores.
"""
from __future__ import annotations

import os
import platform

import torch

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device | str = "cpu") -> dict:
    """What a figure depends on: CPU, cores, threads, load, versions, accelerator."""
    device = torch.device(device)
    cores = os.cpu_count() or 1
    info = dict(cpu=cpu_model(), cores=cores, torch=torch.__version__, python=platform.python_version(),
                threads=torch.get_num_threads(), device=device.type, omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"))
    try:
        info["usable_cores"] = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        info["usable_cores"] = cores
    try:
        info["load_avg_1min"] = round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        info["load_avg_1min"] = None
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def machine_line(info: dict) -> str:
    gpu = f", {info['gpu']} (CUDA {info['cuda']})" if "gpu" in info else ""
    omp = f", OMP_WAIT_POLICY={info['omp_wait_policy']}" if info.get("omp_wait_policy") else ""
    return (f"{info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), torch {info['torch']} "
            f"with {info['threads']} threads{omp}, python {info['python']}, device {info['device']}{gpu}, "
            f"load average {info['load_avg_1min']}")


def machine(device: torch.device | str | None = None) -> str:
    """`machine_line` of this process's machine (the first GPU when there is one): what every benchmark prints."""
    return machine_line(machine_info(device or ("cuda" if torch.cuda.is_available() else "cpu")))


def load_warning(info: dict) -> str | None:
    """A line when other processes hold the cores: the figures will be low and noisy.

    Why OMP_WAIT_POLICY: torch's OpenMP threads busy-wait between parallel regions; when more
    threads than free cores exist, a spinning thread holds the core that the thread it waits for
    needs. On a 2-core machine at load 9 a fastnet step took 6.5 s with the default policy,
    0.35 s with OMP_WAIT_POLICY=passive and 0.28 s with one thread.
    """
    load = info.get("load_avg_1min")
    if load is None or load <= info["cores"]:
        return None
    line = (f"warning: the 1-minute load average ({load:.1f}) exceeds the {info['cores']} cores: other processes "
            f"compete for the CPU, so these figures are low and noisy.")
    if str(info.get("omp_wait_policy") or "").lower() != "passive":
        line += (" torch's OpenMP threads spin while they wait for a core, which can slow a step many times over; "
                 "start Python with OMP_WAIT_POLICY=passive (or fewer threads: OMP_NUM_THREADS=1).")
    return line


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work: timings of a GPU are otherwise only launch times."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


