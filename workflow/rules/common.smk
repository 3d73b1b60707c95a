# helpers shared by the rules: the run config (same loader as the CLI), the machine profile and
# the run's file layout.
import os
import shlex
import subprocess
import sys
from pathlib import Path

from src.app.config import SOURCE_PBMC3K, load_config
from src.app.layout import RunLayout, raw_path
from src.app.machine import load_machine_profile

BASEDIR = Path(workflow.basedir)
APP_CONFIG = str(config.get("app_config", BASEDIR / "config" / "default.yaml"))
CFG = load_config(APP_CONFIG)
LAYOUT = RunLayout.of(CFG)
RAW = raw_path(CFG)
LOGS = Path(CFG.paths.logs) / CFG.run_id

if not Path(CFG.paths.machine_profile).exists():
    # the workflow's first step on a new machine: write the machine profile
    print(f"{CFG.paths.machine_profile} not found; running scripts/generate_config.sh", file=sys.stderr)
    subprocess.run(
        ["bash", str(BASEDIR / "scripts" / "generate_config.sh"), CFG.paths.machine_profile],
        check=True,
        env={**os.environ, "PYTHON": sys.executable},
    )
PROFILE = load_machine_profile(CFG.paths.machine_profile)

# every job runs the CLI with this interpreter and the same run config (env overrides inherited)
CLI = f"{shlex.quote(sys.executable)} -m src.app.cli --config {shlex.quote(APP_CONFIG)}"


def source_input():
    """The download rule's input: the local source file or folder, none for a download."""
    return [] if CFG.data.source == SOURCE_PBMC3K else [CFG.data.source]
