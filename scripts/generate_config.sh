#!/usr/bin/env bash
# writes config.yml (the machine profile) from config.yml.example with values read off this machine.
# usage: scripts/generate_config.sh [output path, default config.yml]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
template="$root/config.yml.example"
out="${1:-$root/config.yml}"
python_bin="${PYTHON:-python3}"
if [ -x "$root/.venv/bin/python" ] && [ -z "${PYTHON:-}" ]; then python_bin="$root/.venv/bin/python"; fi

[ -f "$template" ] || { echo "error: template $template not found" >&2; exit 1; }

os_name="$(uname -s)"
os_version="$(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-unknown}" || echo unknown)"
kernel_version="$(uname -r)"
architecture="$(uname -m)"
cpu_model="$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | sed 's/^ *//' || true)"
cpu_model="${cpu_model:-unknown}"
logical_cores="$(nproc)"
physical_cores="$(lscpu -p=core,socket 2>/dev/null | grep -v '^#' | sort -u | wc -l || true)"
[ "${physical_cores:-0}" -ge 1 ] 2>/dev/null || physical_cores="$logical_cores"
cpu_mhz="$(grep -m1 'cpu MHz' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | tr -d ' ' || true)"
cpu_frequency="$(awk -v m="${cpu_mhz:-0}" 'BEGIN { printf "%.2f", m / 1000 }')"
total_ram_gb="$(awk '/MemTotal/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)"
available_ram_gb="$(awk '/MemAvailable/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)"
total_storage_gb="$(df -Pk "$root" | awk 'NR==2 { printf "%.1f", $2 / 1048576 }')"
free_storage_gb="$(df -Pk "$root" | awk 'NR==2 { printf "%.1f", $4 / 1048576 }')"

gpu_model=none gpu_vram_gb=0.0 gpu_compute_capability=none gpu_multiprocessors=0 cuda_version=none
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  line="$(nvidia-smi --query-gpu=name,memory.total,compute_cap --format=csv,noheader,nounits | head -n1)"
  gpu_model="$(echo "$line" | cut -d, -f1 | sed 's/^ *//;s/ *$//')"
  gpu_vram_gb="$(echo "$line" | cut -d, -f2 | awk '{ printf "%.1f", $1 / 1024 }')"
  gpu_compute_capability="$(echo "$line" | cut -d, -f3 | tr -d ' ')"
  cuda_version="$(nvidia-smi | sed -n 's/.*CUDA Version: *\([0-9.]*\).*/\1/p' | head -n1)"
  cuda_version="${cuda_version:-none}"
fi

python_version="$("$python_bin" -c 'import platform; print(platform.python_version())' 2>/dev/null || echo none)"
torch_info="$("$python_bin" - <<'PY' 2>/dev/null || echo "none 0"
import torch
sm = torch.cuda.get_device_properties(0).multi_processor_count if torch.cuda.is_available() else 0
print(torch.__version__.split("+")[0], sm)
PY
)"
pytorch_version="${torch_info% *}"
torch_sm="${torch_info##* }"
[ "$gpu_model" != none ] && gpu_multiprocessors="$torch_sm"

# tunables: all logical cores for a single-user machine, and 75 % of the available RAM
annotation_threads="$logical_cores"
max_ram_usage_gb="$(awk -v a="$available_ram_gb" 'BEGIN { printf "%.1f", a * 0.75 }')"

quote() { printf '"%s"' "$(printf '%s' "$1" | sed 's/"/\\"/g')"; }
set_key() { # set_key key value: replace the value of 'key:' keeping the line's comment
  sed -i "s|^$1:[^#]*\(#.*\)\?$|$1: $2 \1|; s|^\($1: .*[^ ]\) *$|\1|" "$tmp"
}

tmp="$(mktemp "$(dirname "$out")/.config.yml.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
cp "$template" "$tmp"
sed -i '2s/.*/# generated on '"$(date -u +%Y-%m-%dT%H:%M:%SZ)"' by scripts\/generate_config.sh; tunables at the end may be edited./' "$tmp"
set_key os_name "$(quote "$os_name")"
set_key os_version "$(quote "$os_version")"
set_key kernel_version "$(quote "$kernel_version")"
set_key architecture "$(quote "$architecture")"
set_key cpu_model "$(quote "$cpu_model")"
set_key physical_cores "$physical_cores"
set_key logical_cores "$logical_cores"
set_key cpu_frequency "$cpu_frequency"
set_key total_ram_gb "$total_ram_gb"
set_key available_ram_gb "$available_ram_gb"
set_key total_storage_gb "$total_storage_gb"
set_key free_storage_gb "$free_storage_gb"
set_key gpu_model "$(quote "$gpu_model")"
set_key gpu_vram_gb "$gpu_vram_gb"
set_key gpu_compute_capability "$(quote "$gpu_compute_capability")"
set_key gpu_multiprocessors "$gpu_multiprocessors"
set_key cuda_version "$(quote "$cuda_version")"
set_key python_version "$(quote "$python_version")"
set_key pytorch_version "$(quote "$pytorch_version")"
set_key annotation_threads "$annotation_threads"
set_key max_ram_usage_gb "$max_ram_usage_gb"
mv "$tmp" "$out"
trap - EXIT
echo "wrote $out"
