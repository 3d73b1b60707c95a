"""A training run killed mid-way (SIGKILL, in a child process) leaves the old checkpoint as it
was; the rerun completes and matches an uninterrupted run exactly (training is deterministic)."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import yaml

from src.app.cli import main
from tests.conftest import profile_dict


def _train_until(argv: list[str], where: str, conn) -> None:
    """Child: run the train command and stop at ``where`` ('epoch': the start of the third epoch;
    'save': the weights written into the temporary checkpoint folder, before it replaces the
    old one), tell the parent and wait to be killed."""
    import time

    from src.app.core import data_adapter

    def pause() -> None:
        conn.send(where)
        time.sleep(60)

    try:
        if where == "epoch":
            real_iter, calls = data_adapter.DataAdapter.iter_train_batches, []

            def iter_train_batches(self):
                calls.append(1)
                if len(calls) == 3:
                    pause()
                return real_iter(self)

            data_adapter.DataAdapter.iter_train_batches = iter_train_batches
        else:
            import safetensors.torch

            real_save = safetensors.torch.save_file

            def save_file(*args, **kwargs):
                real_save(*args, **kwargs)
                pause()

            safetensors.torch.save_file = save_file
        main(argv)
        conn.send("finished without pausing")
    except BaseException as exc:  # reported to the parent, which fails the test
        conn.send(repr(exc))
    os._exit(0)


def killed_at(argv: list[str], where: str) -> None:
    """Run ``argv`` in a forked child (torch already imported: no start-up cost) and SIGKILL it
    once it reaches ``where``."""
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_train_until, args=(argv, where, child))
    proc.start()
    assert parent.poll(60), "the training child did not get there"
    assert parent.recv() == where
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    assert proc.exitcode == -signal.SIGKILL


@pytest.mark.slow  # four real training runs, two of them killed (0.8 s)
def test_killed_training_reruns_to_the_uninterrupted_result(tmp_path, pre_adata):
    pre = tmp_path / "pre.h5ad"
    pre_adata.write_h5ad(pre)
    profile = tmp_path / "config.yml"
    profile.write_text(yaml.safe_dump(profile_dict(annotation_threads=1)))
    run = {
        "paths": {"machine_profile": str(profile), "results": str(tmp_path / "results")},
        "data": {"labels": None},
        "model": {"latent_dim": 4, "hidden_dims": [16]},
        "train": {"epochs": 5, "batch_size": 64},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))

    def argv(name: str) -> list[str]:
        out = tmp_path / name
        return [
            "train", "--config", str(tmp_path / "run.yaml"), "--input", str(pre),
            "--model_dir", str(out / "model"), "--output_dir", str(out),
        ]  # fmt: skip

    model = tmp_path / "run" / "model"
    model.mkdir(parents=True)
    (model / "weights.safetensors").write_bytes(b"old")
    for where in ("epoch", "save"):
        killed_at(argv("run"), where)
        assert (model / "weights.safetensors").read_bytes() == b"old", where
        assert [p.name for p in model.iterdir()] == ["weights.safetensors"], where
    # the killed save left its hidden temporary folder; the rerun removes it
    assert len([p for p in model.parent.iterdir() if p.name.startswith(".model.")]) == 1

    assert main(argv("run")) == 0
    assert main(argv("uninterrupted")) == 0
    run_dir, ref_dir = tmp_path / "run", tmp_path / "uninterrupted"
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(p.name for p in ref_dir.iterdir())

    def history(folder: Path) -> list[dict]:
        rows = json.loads((folder / "model" / "history.json").read_text())
        return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]

    assert history(run_dir) == history(ref_dir)
    weights = "model/weights.safetensors"
    assert (run_dir / weights).read_bytes() == (ref_dir / weights).read_bytes()
    np.testing.assert_array_equal(np.load(run_dir / "latent.npy"), np.load(ref_dir / "latent.npy"))
