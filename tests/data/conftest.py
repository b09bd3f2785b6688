"""An S3-compatible server on 127.0.0.1 (moto), and a proxy in front of it that can drop a connection.

Nothing leaves the machine: moto's server runs in a thread of the test process, on a free
loopback port, with throw-away credentials.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

BUCKET = "pixcore-test"


@dataclass
class S3Server:
    """A running moto server: its endpoint URL and a boto3 client for setting up objects."""

    endpoint: str
    client: Any

    def upload(self, folder: Path, prefix: str) -> str:
        """Put every file of ``folder`` under ``s3://BUCKET/prefix/``; return that URL."""
        for path in sorted(folder.iterdir()):
            self.client.upload_file(str(path), BUCKET, f"{prefix}/{path.name}")
        return f"s3://{BUCKET}/{prefix}"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """The S3 server of moto on a free 127.0.0.1 port, with bucket ``pixcore-test``; stopped after the session."""
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("s3fs")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                            ("AWS_DEFAULT_REGION", "us-east-1")):
            patch.setenv(name, value)
        patch.delenv("AWS_ENDPOINT_URL", raising=False)
        patch.delenv("AWS_PROFILE", raising=False)
        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        try:
            yield S3Server(endpoint, client)
        finally:
            server.stop()


class DroppingProxy:
    """A TCP proxy on 127.0.0.1 that cuts the first ``times`` responses to a GET of ``target`` after ``after`` bytes.

    Everything else is forwarded unchanged. ``dropped`` counts the cuts: each time, the
    client saw a connection closed in the middle of a response, as when a network drops.
    """

    def __init__(self, upstream: str, target: bytes, after: int, times: int = 1) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.target, self.after, self.times = target, after, times
        self.dropped = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            state = {"armed": False, "sent": 0}
            threading.Thread(target=self._requests, args=(client, server, state), daemon=True).start()
            threading.Thread(target=self._responses, args=(server, client, state), daemon=True).start()

    def _requests(self, client: socket.socket, server: socket.socket, state: dict[str, Any]) -> None:
        while data := _receive(client):
            with self.lock:
                if self.dropped < self.times and data.startswith(b"GET ") and self.target in data.split(b"\r\n", 1)[0]:
                    state["armed"], state["sent"] = True, 0
            _send(server, data)
        _close(server)

    def _responses(self, server: socket.socket, client: socket.socket, state: dict[str, Any]) -> None:
        while data := _receive(server):
            with self.lock:
                if state["armed"] and self.dropped < self.times and state["sent"] + len(data) > self.after:
                    _send(client, data[: self.after - state["sent"]])
                    self.dropped += 1
                    _close(client)
                    _close(server)
                    return
                state["sent"] += len(data)
            _send(client, data)
        _close(client)


def _receive(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _send(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


@pytest.fixture
def dropping_proxy() -> Iterator[type[DroppingProxy]]:
    """The :class:`DroppingProxy` class; every proxy made in the test is closed after it."""
    made: list[DroppingProxy] = []

    class Tracked(DroppingProxy):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    yield Tracked
    for proxy in made:
        proxy.close()


# --------------------------------------------------------------------------------------
# A Pascal VOC layout and small run configs that train from shards
# --------------------------------------------------------------------------------------

VOC_IDS = ("2007_000032", "2007_000039", "2007_000063", "2007_000068", "2007_000121")


@pytest.fixture(scope="session")
def voc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny VOC2012 folder: 5 JPEG images (24x32) with palette labels; train: 4 ids, val: 1."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("VOC2012")
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, name in enumerate(VOC_IDS):
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"{name}.jpg")
        ids = ((np.arange(24 * 32).reshape(24, 32) // 37 + i) % 21).astype(np.uint8)
        ids[:, 0] = 255  # a border, ignored
        label = Image.fromarray(ids).convert("P")  # palette indices = class ids
        label.putpalette([(j * 37 + c * 91) % 256 for j in range(256) for c in range(3)])
        label.save(root / "SegmentationClass" / f"{name}.png")
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(VOC_IDS[:4]) + "\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text(VOC_IDS[4] + "\n")
    return root


def _small_run(kind: str, train: dict[str, Any], val: dict[str, Any]) -> dict[str, Any]:
    """A 2-step CPU run config of ``kind`` (``synthetic``: the three tasks; ``voc``: segmentation)."""
    head = {"name": "fpn", "params": {"channels": 16}}
    if kind == "synthetic":
        tasks: dict[str, Any] = {"semseg": {"task": "segmentation", "params": {"num_classes": 7}, "head": head},
                                 "depth": {"head": head}, "normals": {"head": head}}
        augmentations: list[Any] = ["hflip"]
    else:
        tasks = {"semseg": {"task": "segmentation", "params": {"num_classes": 21}, "head": head}}
        augmentations = [{"name": "random_crop", "params": {"size": [16, 16]}}, "hflip"]
    return {
        "model": {"backbone": {"name": "timm/resnet18"}, "tasks": tasks},
        "data": {"train": train, "val": val, "augmentations": augmentations, "batch_size": 2, "val_batch_size": 1,
                 "num_workers": 0},
        "trainer": {"steps": 2, "lr": 1e-3, "progress": False, "device": "cpu", "log_every": 1, "warmup_steps": 0},
    }


@pytest.fixture
def small_run() -> Callable[[str, dict[str, Any], dict[str, Any]], dict[str, Any]]:
    """``small_run(kind, train, val)``: a 2-step CPU run config (tests cannot import this file)."""
    return _small_run
