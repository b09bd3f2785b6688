"""Under torchrun: an uninterrupted run and a run stopped and resumed, both from streamed shards.

``python shards_ddp.py CONFIG WHOLE CUT STOP``: in one process group (joined here, so
that the three trainings share it), ``pixcore train CONFIG --out WHOLE``; then
``pixcore train CONFIG --out CUT`` stopped after STOP steps (its checkpoint is mid-epoch)
and ``pixcore train CONFIG --out CUT --resume`` to the config's steps.
"""

from __future__ import annotations

import sys

import torch.distributed as dist
import train_toy


def main(config: str, whole: str, cut: str, stop: int) -> int:
    from pixcore._cli import main as pixcore

    train_toy._use_toy_plugin()
    dist.init_process_group("gloo")
    try:
        statuses = [
            pixcore(["train", config, "--out", whole]),
            pixcore(["train", config, "--out", cut, "--set", f"trainer.steps={stop}"]),
            pixcore(["train", config, "--out", cut, "--resume"]),
        ]
        return max(statuses)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
