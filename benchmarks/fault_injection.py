"""Fault injection: what survives what. Prints the table of docs/training.md "What survives what".

Usage::

    python benchmarks/fault_injection.py [--kills 20] [--sigterm 3] [--torchrun 2] [--quick]

Every trial is a real ``pixcore train`` process (the toy task of the tests, through
``tests/train/train_toy.py``, which registers it) in a folder of its own; a trial
passes only if everything it promises holds:

* **kill -9** at a random moment of a run that checkpoints every step (so that many
  kills land inside a save): the checkpoint on disk loads completely, and resuming it
  ends bitwise equal to an uninterrupted run. Kills that left a temporary file (inside
  a save) are counted apart.
* **SIGTERM** to the main process, or to every process of the job (data-loader workers
  included), with 0 and 2 workers; and under ``pixcore launch`` (torchrun, 2 gloo
  processes) to the launcher or to every process: exit status 75 (of the launcher),
  one checkpoint of the last finished step, and a resume (``--resume``) that ends
  bitwise equal to an uninterrupted run.
* **NaN**: a learning rate of 1e8, and a NaN in the data, with ``on_non_finite`` stop
  and skip: the checkpoint on disk only ever holds finite values, and "stop" exits 2
  with a message.
* **A full disk** (a 1 MiB tmpfs mounted for the trial; needs root, else skipped): the
  previous checkpoint is intact and the message says the disk is full.
* **User errors**: every mistake of the list in docs/training.md exits 2 with a
  one-line message that names what to change, and no traceback.
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "tests" / "train" / "train_toy.py"
sys.path.insert(0, str(TOY.parent))

import train_toy  # noqa: E402
from pixcore import RunConfig  # noqa: E402

STEPS = 40
VERBOSE = False


@dataclass
class Tally:
    """Trials of one kind: how many, how many passed, and what went wrong in the others."""

    name: str
    trials: int = 0
    passed: int = 0
    notes: list[str] = field(default_factory=list)
    extra: dict[str, int] = field(default_factory=dict)

    def record(self, ok: bool, note: str = "") -> None:
        self.trials += 1
        self.passed += ok
        if not ok and note:
            self.notes.append(note)


def _env() -> dict[str, str]:
    return {**os.environ, "PIXCORE_DISABLE_PLUGIN_AUTOLOAD": "1", "OMP_NUM_THREADS": "1",
            "GLOO_SOCKET_IFNAME": "lo"}


def _config(folder: Path, **settings: Any) -> Path:
    path = folder / "run.json"
    path.write_text(RunConfig.model_validate(train_toy.run_config(**settings)).model_dump_json())
    return path


def _train_command(config: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(TOY), "pixcore", "train", str(config), "--out", str(out), *extra]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _launch_command(config: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(TOY), "pixcore", "launch", "--nnodes", "1", "--nproc-per-node", "2",
            "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
            *_train_command(config, out, *extra)[1:]]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys() if k.startswith("model.")}  # noqa: SIM118


def _same(a: Path, b: Path) -> bool:
    x, y = _weights(a), _weights(b)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def _descendants(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    children = [int(c) for c in path.read_text().split()] if path.exists() else []
    return children + [d for c in children for d in _descendants(c)]


def _rows(out: Path) -> int:
    log = out / "log.csv"
    return max(0, len(log.read_text().splitlines()) - 1) if log.exists() else 0


def _run_until(command: list[str], out: Path, step: int, timeout: float = 120) -> subprocess.Popen[str]:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env=_env(), start_new_session=True)
    deadline = time.monotonic() + timeout
    while _rows(out) < step and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    return process


def _reference(folder: Path, name: str, command: Callable[[Path], list[str]]) -> Path:
    out = folder / name
    done = subprocess.run(command(out), capture_output=True, text=True, env=_env())
    if done.returncode != 0:
        raise SystemExit(f"the uninterrupted {name} run failed:\n{done.stderr}")
    return out / "checkpoint.safetensors"


# -- kill -9 ------------------------------------------------------------------------------------


def kills(folder: Path, trials: int, rng: random.Random) -> Tally:
    tally = Tally("kill -9 at a random moment (checkpoint every step)")
    # A wide backbone: 8 MB checkpoints, whose writing takes most of each step, so that
    # many kills land inside a save.
    data = train_toy.run_config(steps=STEPS, checkpoint_every=1, dropout=0.3)
    data["model"]["backbone"]["params"]["width"] = 256
    config = folder / "kill.json"
    config.write_text(RunConfig.model_validate(data).model_dump_json())
    reference = _reference(folder, "kill-ref", functools.partial(_train_command, config))
    for trial in range(trials):
        out = folder / f"kill-{trial}"
        process = _run_until(_train_command(config, out), out, step=rng.randint(2, STEPS - 5))
        time.sleep(rng.uniform(0, 0.05))  # anywhere in a step, its save included
        process.kill()
        process.communicate()
        if list(out.glob(".checkpoint.safetensors.tmp-*")):
            tally.extra["inside a save"] = tally.extra.get("inside a save", 0) + 1
        resume = subprocess.run(_train_command(config, out, "--resume"), capture_output=True, text=True,
                                env=_env())
        ok = resume.returncode == 0 and _same(out / "checkpoint.safetensors", reference)
        tally.record(ok, f"trial {trial}: resume status {resume.returncode} {resume.stderr[-300:]}")
    return tally


# -- SIGTERM ------------------------------------------------------------------------------------


def _sigterm_trial(command: Callable[..., list[str]], config: Path, out: Path, reference: Path,
                   whole_job: bool, rng: random.Random) -> tuple[bool, str]:
    process = _run_until(command(config, out), out, step=rng.randint(2, STEPS // 2))
    time.sleep(rng.uniform(0, 0.05))
    for pid in [process.pid, *(_descendants(process.pid) if whole_job else [])]:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        _, err = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return False, "did not stop within 120 s"
    if process.returncode != 75 or "Traceback" in err:
        return False, f"status {process.returncode}: {err[-400:]}"
    if sorted(p.name for p in out.iterdir() if "checkpoint" in p.name) != ["checkpoint.safetensors"]:
        return False, "not exactly one checkpoint file"
    resume = subprocess.run(command(config, out, "--resume"), capture_output=True, text=True, env=_env())
    if resume.returncode != 0:
        return False, f"resume status {resume.returncode}: {resume.stderr[-400:]}"
    return _same(out / "checkpoint.safetensors", reference), "resumed weights differ"


def sigterms(folder: Path, trials: int, torchrun_trials: int, rng: random.Random) -> list[Tally]:
    tallies = []
    for workers in (0, 2):
        # 20 ms per sample: steps long enough for a signal to land mid-step.
        config = _config(folder, steps=STEPS, workers=workers, dropout=0.3, train_params={"delay": 0.005})
        reference = _reference(folder, f"term-ref-{workers}", functools.partial(_train_command, config))
        for whole_job in (False, True):
            tally = Tally(f"SIGTERM to {'every process' if whole_job else 'the main process'}, "
                          f"{workers} workers")
            for trial in range(trials):
                out = folder / f"term-{workers}-{whole_job}-{trial}"
                tally.record(*_sigterm_trial(_train_command, config, out, reference, whole_job, rng))
            tallies.append(tally)
    settings: dict[str, Any] = {"steps": STEPS, "batch_size": 2, "length": 16, "norm": False,
                                "head": "linear", "train_params": {"delay": 0.02}}
    config = _config(folder, **settings)
    reference = _reference(folder, "ddp-ref", lambda out: _launch_command(config, out))
    for whole_job in (False, True):
        tally = Tally(f"SIGTERM to {'every process' if whole_job else 'the launcher'}, pixcore launch "
                      "(torchrun), 2 processes")
        for trial in range(torchrun_trials):
            out = folder / f"ddp-{whole_job}-{trial}"
            tally.record(*_sigterm_trial(_launch_command, config, out, reference, whole_job, rng))
        tallies.append(tally)
    return tallies


# -- NaN ----------------------------------------------------------------------------------------


def _all_finite(path: Path) -> bool:
    return all(bool(torch.isfinite(t.float()).all()) for t in _weights(path).values())


def nans(folder: Path) -> list[Tally]:
    cases = {
        "lr 1e8": {"lr": 1e8},
        "NaN in the data": {"train_params": {"poison": [9]}},
    }
    tallies = []
    for name, settings in cases.items():
        for mode in ("stop", "skip"):
            tally = Tally(f"{name}, on_non_finite={mode}")
            out = folder / f"nan-{len(tallies)}"
            out.mkdir()
            config = _config(out, steps=12, checkpoint_every=1, on_non_finite=mode, **settings)
            done = subprocess.run(_train_command(config, out / "run"), capture_output=True, text=True,
                                  env=_env())
            path = out / "run" / "checkpoint.safetensors"
            expected = 2 if mode == "stop" else 0
            ok = (done.returncode == expected and "Traceback" not in done.stderr
                  and (not path.exists() or _all_finite(path)))
            tally.record(ok, f"status {done.returncode}: {done.stderr[-300:]}")
            tallies.append(tally)
    return tallies


# -- a full disk ---------------------------------------------------------------------------------


def full_disk(folder: Path) -> Tally:
    tally = Tally("a full disk while saving (1 MiB tmpfs)")
    mount = folder / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        tally.notes.append("skipped: mounting a tmpfs needs root")
        return tally
    try:
        out = mount / "run"
        first = subprocess.run(_train_command(_config(folder, steps=2), out), capture_output=True, env=_env())
        path = out / "checkpoint.safetensors"
        before = path.read_bytes() if first.returncode == 0 else b""
        # Leave room for half a checkpoint (log rows still fit, the next checkpoint does not).
        (mount / "filler").write_bytes(b"\0" * (shutil.disk_usage(mount).free - len(before) // 2))
        # The same run resumed with 4 more steps: its checkpoint no longer fits.
        (folder / "wide").mkdir()
        second = subprocess.run(_train_command(_config(folder / "wide", steps=6), out, "--resume"),
                                capture_output=True, text=True, env=_env())
        kept = path.exists() and path.read_bytes() == before
        ok = (second.returncode == 2 and "Traceback" not in second.stderr and "space" in second.stderr
              and kept and not list(out.glob(".checkpoint*")))
        tally.record(ok, f"status {second.returncode}, previous kept: {kept}: {second.stderr[-300:]}")
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)
    return tally


# -- user errors -------------------------------------------------------------------------------


def _folder_data(root: Path, bad_id: int) -> None:
    """Four 32x32 images with 3-class masks; one mask holds ``bad_id``."""
    import numpy as np
    from PIL import Image

    for name in ("images", "labels"):
        (root / name).mkdir(parents=True)
    for i in range(4):
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(root / "images" / f"{i}.png")
        mask = np.zeros((32, 32), np.uint8)
        mask[:8] = bad_id if i == 2 else 1
        Image.fromarray(mask).save(root / "labels" / f"{i}.png")


def _real_config(folder: Path, **trainer: Any) -> dict[str, Any]:
    data = {"name": "folder", "params": {"root": str(folder / "data"), "image": "images/*.png", "validate": "off",
                                         "targets": {"semseg": {"pattern": "labels/*.png", "kind": "class_mask",
                                                                "num_classes": 3}}}}
    return {"model": {"backbone": "timm/resnet18",
                      "tasks": {"semseg": {"task": "segmentation", "params": {"num_classes": 3}}}},
            "data": {"train": data, "batch_size": 2},
            "trainer": {"steps": 2, "device": "cpu", "progress": False, **trainer}}


def user_errors(folder: Path) -> Tally:
    """Each mistake: (what, command, a phrase the message must hold)."""
    import json

    import numpy as np
    from PIL import Image

    tally = Tally("user errors: exit 2, one line naming what to change, no traceback")
    toy = [sys.executable, str(TOY), "pixcore"]
    real = [sys.executable, "-m", "pixcore"]
    config = _config(folder, steps=2)
    done = folder / "done"
    subprocess.run(_train_command(config, done), capture_output=True, env=_env(), check=True)
    checkpoint = done / "checkpoint.safetensors"
    # Damaged files and odd images.
    not_json = folder / "not_json.safetensors"
    from safetensors.torch import save_file
    save_file({"model.x": torch.zeros(1)}, str(not_json), metadata={"pixcore": "{not json"})
    torch.save({"w": torch.zeros(1)}, folder / "weights.pt")
    (folder / "empty.safetensors").write_bytes(b"")
    photos = folder / "photos"
    photos.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(photos / "a.png")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(photos / "a_grid.png")
    jpeg = folder / "cut" / "b.jpg"
    jpeg.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(jpeg)
    jpeg.write_bytes(jpeg.read_bytes()[:600])
    big = folder / "big" / "huge.png"
    big.parent.mkdir()
    Image.new("1", (20000, 20000)).save(big)
    _folder_data(folder / "data", bad_id=9)
    real_config = folder / "real.json"
    real_config.write_text(json.dumps(_real_config(folder)))
    timm_damaged = folder / "timm.json"
    damaged = _real_config(folder)
    damaged["model"]["backbone"] = {
        "name": "timm/resnet18", "params": {"pretrained": str(folder / "empty.safetensors")},
    }
    timm_damaged.write_text(json.dumps(damaged))
    no_prefix = folder / "no_prefix.json"
    no_prefix.write_text(json.dumps({**_real_config(folder), "model": {**_real_config(folder)["model"],
                                                                        "backbone": "resnet18"}}))
    predict = [*toy, "predict", "--checkpoint"]
    cases: list[tuple[str, list[str], str]] = [
        ("trainer.device: gpu0", [*toy, "train", str(config), "--out", str(folder / "e1"),
                                  "--set", "trainer.device=gpu0"], "cuda:N"),
        ("--set 'trainer.lr=[1'", [*toy, "train", str(config), "--out", str(folder / "e2"),
                                   "--set", "trainer.lr=[1"], "trainer.lr=[1"),
        ("trainer.lr: .inf", [*toy, "train", str(config), "--out", str(folder / "e3"),
                              "--set", "trainer.lr=.inf"], "trainer.lr"),
        ("an unknown key (stpes)", [*toy, "train", str(config), "--out", str(folder / "e4"),
                                    "--set", "trainer.stpes=3"], "did you mean 'steps'"),
        ("an early-stopping metric typo", [*toy, "train", str(config), "--out", str(folder / "e5"),
                                           "--set", "trainer.early_stopping_metric=brightness/MAE",
                                           "--set", "trainer.eval_every=1"], "did you mean 'brightness/mae'"),
        ("a new run over a finished one", [*toy, "train", str(config), "--out", str(done)], "--overwrite"),
        ("a checkpoint with non-JSON metadata (predict)", [*predict, str(not_json), str(photos),
                                                           "--out", str(folder / "p1")], str(not_json)),
        ("a .pt file given to eval", [*toy, "eval", str(config), "--checkpoint", str(folder / "weights.pt")],
         "model.pretrained"),
        ("a .pt file given to predict", [*predict, str(folder / "weights.pt"), str(photos), "--out",
                                         str(folder / "p2")], "model.pretrained"),
        ("predict --out = the input folder, an input named like an output",
         [*predict, str(checkpoint), str(photos), "--out", str(photos), "--overwrite"], "a_grid.png"),
        ("a truncated JPEG given to predict", [*predict, str(checkpoint), str(jpeg), "--out", str(folder / "p3")],
         "b.jpg"),
        ("a 20000x20000 PNG given to predict", [*predict, str(checkpoint), str(big), "--out", str(folder / "p4")],
         "--max-pixels"),
        ("a class id out of range, validate: off", [*real, "train", str(real_config), "--out", str(folder / "e6")],
         "2.png"),
        ("an empty .safetensors as the timm backbone's pretrained", [*real, "train", str(timm_damaged), "--out",
                                                                       str(folder / "e7")], "empty.safetensors"),
        ("resnet18 without timm/", [*real, "train", str(no_prefix), "--out", str(folder / "e8")],
         "timm/resnet18"),
    ]
    for what, command, phrase in cases:
        result = subprocess.run(command, capture_output=True, text=True,
                                env={**_env(), "PIXCORE_DISABLE_PLUGIN_AUTOLOAD": "0"} if command[1] == "-m"
                                else _env())
        ok = result.returncode == 2 and "Traceback" not in result.stderr and phrase in result.stderr
        tally.record(ok, f"{what}: status {result.returncode}: {result.stderr[-300:]}")
        if VERBOSE:
            print(f"- {what}:\n    {result.stderr.strip()}", file=sys.stderr)
    return tally


# -- main ---------------------------------------------------------------------------------------


def _table(tallies: list[Tally]) -> str:
    lines = ["| fault | trials | passed | notes |", "| --- | ---: | ---: | --- |"]
    for t in tallies:
        extra = ", ".join(f"{v} {k}" for k, v in t.extra.items())
        notes = "; ".join(filter(None, [extra, *t.notes[:2]])).replace("\n", " ").replace("|", "/")
        lines.append(f"| {t.name} | {t.trials} | {t.passed} | {notes} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--sigterm", type=int, default=3, help="trials per single-process SIGTERM case")
    parser.add_argument("--torchrun", type=int, default=2, help="trials per torchrun SIGTERM case")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="one trial of each")
    parser.add_argument("--only", choices=["kills", "sigterm", "nan", "disk", "user"], help="one group only")
    parser.add_argument("--verbose", action="store_true", help="print each user error's message")
    args = parser.parse_args()
    global VERBOSE
    VERBOSE = args.verbose
    if args.quick:
        args.kills = args.sigterm = args.torchrun = 1
    rng = random.Random(args.seed)
    started = time.monotonic()
    folder = Path(tempfile.mkdtemp(prefix="pixcore-faults-"))
    try:
        groups: dict[str, Callable[[], list[Tally]]] = {
            "kills": lambda: [kills(folder, args.kills, rng)],
            "sigterm": lambda: sigterms(folder, args.sigterm, args.torchrun, rng),
            "nan": lambda: nans(folder),
            "disk": lambda: [full_disk(folder)],
            "user": lambda: [user_errors(folder)],
        }
        tallies = [t for name, run in groups.items() if args.only in (None, name) for t in run()]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(_table(tallies))
    print(f"\n{time.monotonic() - started:.0f} s; torch {torch.__version__}, Python {sys.version.split()[0]}")
    return 0 if all(t.passed == t.trials for t in tallies) else 1


if __name__ == "__main__":
    sys.exit(main())
