"""Machine profile (``config.yml``) and the runtime settings derived from it by the SPEC rules.

Nothing here imports torch: :func:`resolve_runtime` takes ``cuda_available`` as an argument so each
rule is a pure function, and :func:`apply_threads` is called by the code that owns torch.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src.app.config import TrainConfig, _build, read_yaml
from src.app.errors import ConfigError

GENERATE_HINT = "run `chmod +x scripts/generate_config.sh && scripts/generate_config.sh`"
DEFAULT_EPOCHS = 100
AUTOCAST_MIN_VRAM_GB = 12.0
AUTOCAST_MIN_MEMORY_FRACTION = 0.85


@dataclass(frozen=True)
class MachineProfile:
    """Every key of ``config.yml``; facts read off the machine, then the tunables."""

    os_name: str
    os_version: str
    kernel_version: str
    architecture: str
    cpu_model: str
    physical_cores: int
    logical_cores: int
    cpu_frequency: float
    total_ram_gb: float
    available_ram_gb: float
    total_storage_gb: float
    free_storage_gb: float
    gpu_model: str
    gpu_vram_gb: float
    gpu_compute_capability: str
    gpu_multiprocessors: int
    cuda_version: str
    python_version: str
    pytorch_version: str
    annotation_threads: int
    batch_size: int | None
    learning_rate: float
    max_epochs: int
    max_ram_usage_gb: float
    gpu_memory_fraction: float
    keep_intermediate_files: bool
    keep_temp_files: bool
    compression_type: str

    def __post_init__(self) -> None:
        checks = {
            "annotation_threads": self.annotation_threads >= 1,
            "batch_size": self.batch_size is None or self.batch_size >= 2,
            "learning_rate": self.learning_rate > 0,
            "max_epochs": self.max_epochs >= 1,
            "max_ram_usage_gb": self.max_ram_usage_gb > 0,
            "gpu_vram_gb": self.gpu_vram_gb >= 0,
            "gpu_memory_fraction": 0 < self.gpu_memory_fraction <= 1,
            "compression_type": self.compression_type in ("gzip", "lzf", "none"),
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            value = getattr(self, bad[0])
            raise ConfigError(f"machine profile key '{bad[0]}': value {value!r} is out of range")

    @property
    def h5ad_compression(self) -> str | None:
        return None if self.compression_type == "none" else self.compression_type


def profile_from_dict(data: dict[str, Any], source: str = "config.yml") -> MachineProfile:
    # YAML reads versions such as 12.4 as numbers: the string keys accept them as text
    text_keys = {f.name for f in dataclasses.fields(MachineProfile) if f.type == "str"}
    data = {k: (str(v) if k in text_keys and v is not None else v) for k, v in data.items()}
    missing = sorted({f.name for f in dataclasses.fields(MachineProfile)} - set(data))
    if missing:
        raise ConfigError(
            f"machine profile {source} lacks key(s) {', '.join(missing)}; "
            f"regenerate it: {GENERATE_HINT}"
        )
    try:
        return _build(MachineProfile, data)
    except ConfigError as exc:
        raise ConfigError(f"machine profile {source}: {exc}") from None


def load_machine_profile(path: str | Path) -> MachineProfile:
    """Read ``config.yml``; a missing file fails with the command that creates it."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"machine profile {path} not found; {GENERATE_HINT}")
    try:
        data = read_yaml(path)
    except ConfigError as exc:
        raise ConfigError(f"machine profile: {exc}; regenerate it: {GENERATE_HINT}") from None
    return profile_from_dict(data, str(path))


@dataclass(frozen=True)
class Runtime:
    """Resolved runtime settings for one job."""

    device: str
    threads: int
    loader_workers: int
    batch_size: int
    lr: float
    epochs: int
    autocast: bool
    max_ram_gb: float
    gpu_memory_fraction: float


def default_batch_size(gpu_vram_gb: float) -> int:
    if gpu_vram_gb <= 4:
        return 128
    if gpu_vram_gb <= 8:
        return 256
    return 512


def resolve_runtime(
    profile: MachineProfile, train: TrainConfig, *, cuda_available: bool
) -> Runtime:
    """Apply the SPEC rules: run config values win, then config.yml, then built-in defaults."""
    gpu_ok = profile.gpu_vram_gb > 0 and cuda_available
    if train.device == "cuda" and not cuda_available:
        raise ConfigError("config key 'train.device': 'cuda' requested but CUDA is not available")
    device = train.device if train.device != "auto" else ("cuda" if gpu_ok else "cpu")
    if train.batch_size is not None:
        batch_size = train.batch_size
    elif profile.batch_size is not None:
        batch_size = profile.batch_size
    else:
        batch_size = default_batch_size(profile.gpu_vram_gb)
    autocast = device == "cuda" and (
        profile.gpu_vram_gb >= AUTOCAST_MIN_VRAM_GB
        or profile.gpu_memory_fraction >= AUTOCAST_MIN_MEMORY_FRACTION
    )
    return Runtime(
        device=device,
        threads=profile.annotation_threads,
        loader_workers=max(1, min(profile.annotation_threads, 8)),
        batch_size=batch_size,
        lr=train.lr if train.lr is not None else profile.learning_rate,
        epochs=train.epochs if train.epochs is not None else profile.max_epochs,
        autocast=autocast,
        max_ram_gb=profile.max_ram_usage_gb,
        gpu_memory_fraction=profile.gpu_memory_fraction,
    )


def set_thread_env(threads: int) -> None:
    """Set OMP/MKL thread counts for this process; call before NumPy-heavy libraries start."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
