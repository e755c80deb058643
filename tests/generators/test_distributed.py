"""Several processes train one model with DistributedDataParallel: 2 processes, gloo backend, on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from synthrelease.data.ingest import IngestOptions, ingest
from synthrelease.data.phantoms.cohort import write_phantom_cohort
from synthrelease.generators.base import Generator


def test_two_process_gloo_run_keeps_replicas_in_sync(tmp_path):
    src = write_phantom_cohort(tmp_path / "src", modality="ct", cases=5, shape=16, seed=1, fmt="nnunet")
    ws = ingest(src, tmp_path / "ws", modality="ct", options=IngestOptions(seed=0)).root
    config = tmp_path / "ddp.toml"
    config.write_text('generator = "ddpm"\nsteps = 4\nbatch_size = 1\ncheckpoint_every = 2\n'
                      "channels = [8, 16]\nattention_levels = [false, false]\nnorm_num_groups = 8\n"
                      "num_train_timesteps = 50\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "synthrelease_cli", "--quiet", "train", str(ws), "--generator", "ddpm", "--config", str(config),
           "--name", "ddp", "--device", "cpu"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    info = json.loads((ws / "models" / "ddp" / "run.json").read_text())
    assert info["status"] == "complete" and info["world_size"] == 2
    sums = info["replica_checksums"]
    assert len(sums) == 2 and sums[0] == sums[1]  # gradients were averaged: both replicas ended identical
    model = Generator.load(ws / "models" / "ddp" / "model.pt")
    assert model.sample(1, seed=0, steps=2)[0].shape == (16, 16, 16)
    assert (ws / "models" / "ddp" / "checkpoints" / "step_0000002.pt").is_file()
