"""A multi-worker trainable for the tests: its workers sum a number over TCP using nothing
but the rendezvous environment (``MASTER_ADDR``/``MASTER_PORT``/``WORLD_SIZE``/``RANK``), as
torch.distributed's TCP store would: ranks > 0 connect to rank 0, rank 0 adds every value
and sends the sum back. No torch needed."""

from __future__ import annotations

import json
import os
import socket
import struct
import tempfile
import time
from typing import Any

from kubetune import train
from kubetune.air import Checkpoint
from kubetune.air.config import ScalingConfig
from kubetune.train.torch import TorchConfig, TorchTrainer


class AllReduce:
    def __init__(self, timeout: float = 60.0) -> None:
        self.rank = int(os.environ.get("RANK", "0"))
        self.size = int(os.environ.get("WORLD_SIZE", "1"))  # 1: a one-worker trial
        self.peers: list[socket.socket] = []
        if self.size == 1:
            return
        addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
        deadline = time.monotonic() + timeout
        if self.rank == 0:
            server = socket.socket()
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind(("0.0.0.0", port))
            server.listen(self.size)
            server.settimeout(timeout)
            while len(self.peers) < self.size - 1:
                conn, _ = server.accept()
                self.peers.append(conn)
            server.close()
        else:
            while True:
                try:
                    self.peers.append(socket.create_connection((addr, port), timeout=timeout))
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)

    def sum(self, value: float) -> float:
        if self.rank == 0:
            total = value + sum(_recv(p) for p in self.peers)
            for p in self.peers:
                p.sendall(struct.pack("!d", total))
            return total
        self.peers[0].sendall(struct.pack("!d", value))
        return _recv(self.peers[0])


def _recv(sock: socket.socket) -> float:
    data = b""
    while len(data) < 8:
        chunk = sock.recv(8 - len(data))
        if not chunk:
            raise ConnectionError("a peer of the all-reduce went away")
        data += chunk
    return float(struct.unpack("!d", data)[0])


def train_loop(config: dict[str, Any]) -> None:
    """Each step all-reduces ``rank + 1`` times ``scale``: the sum is scale * N(N+1)/2."""
    ctx = train.get_context()
    start = 0
    ckpt = train.get_checkpoint()
    if ckpt is not None:
        with open(os.path.join(ckpt.path, "state.json")) as f:
            start = json.load(f)["step"]
    comm = AllReduce()
    restored_total = comm.sum(float(start))  # where every worker resumed, summed
    fail_rank = config.get("fail_rank")
    for step in range(start, config["steps"]):
        time.sleep(config.get("sleep", 0.0))
        if fail_rank == ctx.get_world_rank() and ckpt is None and step == config.get("fail_at"):
            raise RuntimeError(f"rank {fail_rank} fails at step {step}")
        total = comm.sum(float(ctx.get_world_rank() + 1) * config.get("scale", 1))
        d = tempfile.mkdtemp()
        with open(os.path.join(d, "state.json"), "w") as f:
            json.dump({"step": step + 1}, f)
        train.report(
            {
                "sum": total,
                "step": step + 1,
                "restored_from": start,
                "restored_total": restored_total,
                "world_size": ctx.get_world_size(),
                "reporter_rank": ctx.get_world_rank(),
                "master": os.environ.get("MASTER_ADDR"),
            },
            checkpoint=Checkpoint.from_directory(d),
        )


# torch (if installed) must not take MASTER_PORT: the loop rendezvous by itself
trainer = TorchTrainer(
    train_loop,
    train_loop_config={"steps": 4},
    torch_config=TorchConfig(init_process_group=False),
    scaling_config=ScalingConfig(num_workers=3, resources_per_worker={"CPU": 0.1}),
)
