"""Resolve the runtime (device, threads, batch size, autocast) of a job from config + config.yml."""

from __future__ import annotations

import logging

import torch

from src.app.config import Config
from src.app.machine import MachineProfile, Runtime, load_machine_profile, resolve_runtime

log = logging.getLogger(__name__)


def runtime_for(cfg: Config, *, profile: MachineProfile | None = None) -> Runtime:
    """Read the machine profile (unless given), apply the SPEC rules and set torch's threads."""
    if profile is None:
        profile = load_machine_profile(cfg.paths.machine_profile)
    runtime = resolve_runtime(profile, cfg.train, cuda_available=torch.cuda.is_available())
    torch.set_num_threads(runtime.threads)
    log.info(
        "runtime: device=%s threads=%d batch_size=%d autocast=%s",
        runtime.device,
        runtime.threads,
        runtime.batch_size,
        runtime.autocast,
    )
    return runtime
