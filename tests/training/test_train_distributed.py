"""Two CPU processes (gloo) run GRPO for a few steps and end with identical weights.

The processes are started by torchrun (`python -m torch.distributed.run`), which is also what
`accelerate launch` uses on GPUs; accelerate's own CPU multi-process launcher needs MPI. Inside,
training.grpo uses accelerate's Accelerator (gloo process group on CPU).
"""
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

# The session `chain` fixture trains three tiny stages (about a minute alone); its time counts toward
# the first test that uses it, so these tests get more than the suite's 300 s on a loaded machine.
pytestmark = pytest.mark.timeout(900)


def test_two_process_gloo_replicas_stay_identical(chain, tmp_path, grpo_args):
    import socket

    with socket.socket() as sk:  # a free port for the gloo rendezvous
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           "-m", "training", "grpo", "--model", str(chain["m2"]), "--data", str(chain["data"]), "--out", str(out),
           "--descriptors", str(chain["desc"]), *grpo_args, "--prompts-per-step", "4",
           "--dump-replica-weights", "--threads", "1"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    a = load_file(str(out / "replica-0.safetensors"))
    b = load_file(str(out / "replica-1.safetensors"))
    init = load_file(str(chain["m2"] / "afs" / "model.safetensors"))
    assert a.keys() == b.keys() and len(a) > 0
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert any(not np.array_equal(a[f"afs.{k}"], init[k]) for k in init), "the replicas did train"
    log = (out / "log.jsonl").read_text().splitlines()
    assert len(log) == 2 and '"completions": 16' in log[0]  # 4 prompts x 4 generations over 2 processes
