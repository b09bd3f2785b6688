"""Pre-emption as clusters do it: SIGTERM to the whole process group, workers and torchrun included.

Slurm (``scancel``), container runtimes and Kubernetes signal every process of a job,
the data-loader workers too; torchrun forwards the signal to its workers once more. In
every case the run must finish its step, write one checkpoint, end with status 75, and
resume to the weights of an uninterrupted run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import train_toy
from pixcore import RunConfig
from pixcore.train import EXIT_INTERRUPTED, read_metadata, train

TOY_SCRIPT = Path(train_toy.__file__).resolve()


def _env() -> dict[str, str]:
    env = {**os.environ, "PIXCORE_DISABLE_PLUGIN_AUTOLOAD": "1", "OMP_NUM_THREADS": "1"}
    if sys.platform.startswith("linux"):
        env["GLOO_SOCKET_IFNAME"] = "lo"
    return env


def _config(workers: int, steps: int) -> RunConfig:
    return RunConfig.model_validate(train_toy.run_config(steps=steps, workers=workers, dropout=0.3))


def _start(command: list[str], out: Path, rows: int) -> subprocess.Popen[str]:
    """Start ``command`` in a session of its own; return once ``out/log.csv`` has ``rows`` rows."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=_env(), start_new_session=True)
    log, deadline = out / "log.csv", time.monotonic() + 120
    while not (log.exists() and len(log.read_text().splitlines()) > rows):
        if process.poll() is not None:
            pytest.fail(f"the run ended early (status {process.returncode}):\n{process.communicate()[1]}")
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail("timed out waiting for the first steps")
        time.sleep(0.01)
    return process


def _finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        _, err = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail("the run did not stop within 120 s of SIGTERM")
    return process.returncode, err


def _assert_resumes_exactly(out: Path, workers: int) -> None:
    step = read_metadata(out / "checkpoint.safetensors")["step"]
    manager = train_toy.toy_manager()
    resumed, _ = train(_config(workers, step + 2), out, manager, resume=out / "checkpoint.safetensors")
    whole, _ = train(_config(workers, step + 2), out.parent / "whole", manager)
    for (name, a), b in zip(resumed.model.state_dict().items(), whole.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), f"{name} differs from the uninterrupted run's"


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_sigterm_to_the_whole_process_group_checkpoints_and_resumes_exactly(tmp_path: Path, workers: int) -> None:
    config, out = tmp_path / "run.json", tmp_path / "run"
    config.write_text(_config(workers, 100_000).model_dump_json())
    command = [sys.executable, str(TOY_SCRIPT), "pixcore", "train", str(config), "--out", str(out)]
    process = _start(command, out, rows=3)
    os.killpg(process.pid, signal.SIGTERM)  # the main process and its data-loader workers
    status, err = _finish(process)
    assert status == EXIT_INTERRUPTED, err
    assert "killed by signal" not in err and "Traceback" not in err, err
    assert "stopped by SIGTERM after step" in err
    _assert_resumes_exactly(out, workers)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _descendants(pid: int) -> list[int]:
    children_file = Path(f"/proc/{pid}/task/{pid}/children")
    children = [int(c) for c in children_file.read_text().split()] if children_file.exists() else []
    return children + [d for child in children for d in _descendants(child)]


def _launch_command(config: Path, out: Path) -> list[str]:
    return [
        sys.executable, str(TOY_SCRIPT), "pixcore", "launch", "--nnodes", "1", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
        str(TOY_SCRIPT), "pixcore", "train", str(config), "--out", str(out),
    ]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the job's processes in /proc")
@pytest.mark.parametrize("target", ["launcher", "group"])
def test_pixcore_launch_ends_with_75_and_one_checkpoint_when_signalled(tmp_path: Path, target: str) -> None:
    # Kubernetes signals the launcher (torchrun forwards it); Slurm signals every process.
    # Steps of ~0.2 s (longer than torchrun's 0.1 s monitor interval): the signal torchrun
    # forwards reaches the workers mid-step, after the group's own SIGTERM.
    settings: dict[str, Any] = {"steps": 100_000, "batch_size": 2, "length": 16, "norm": False,
                                "head": "linear", "train_params": {"delay": 0.1}}
    config, out = tmp_path / "run.json", tmp_path / "run"
    config.write_text(RunConfig.model_validate(train_toy.run_config(**settings)).model_dump_json())
    process = _start(_launch_command(config, out), out, rows=3)
    if target == "launcher":
        process.send_signal(signal.SIGTERM)
    else:  # as Slurm's scancel: every process of the job (torchrun starts its workers in new sessions)
        for pid in [process.pid, *_descendants(process.pid)]:
            os.kill(pid, signal.SIGTERM)
    status, err = _finish(process)
    assert status == EXIT_INTERRUPTED, err
    assert "all 2 workers wrote their checkpoint and ended with 75" in err
    assert "SignalException" not in err and "Traceback" not in err, err
    meta = read_metadata(out / "checkpoint.safetensors")
    assert meta["world_size"] == 2 and meta["step"] >= 3
    assert sorted(p.name for p in out.glob("*.safetensors*")) == ["checkpoint.safetensors"]
    assert not list(out.glob(".checkpoint*")), "no temporary file is left behind"
