"""Distributed data-parallel training per trial: a TorchTrainer with 4 workers (gloo on CPU).

    pip install torch  # not a kubetune dependency, and not installed in its CI
    python examples/torch_ddp.py

Each trial is 4 worker processes here (4 pods on a cluster: `kubetune submit`, or a
TuneExperiment with `resources: {workers: 4, ...}`); the process group is initialised before
`train_loop_per_worker` runs, `prepare_model` wraps the model in DistributedDataParallel and
`prepare_data_loader` gives each worker its shard. Rank 0 reports and checkpoints.
"""

from __future__ import annotations

import os
import tempfile

from kubetune import train, tune
from kubetune.air import Checkpoint
from kubetune.air.config import RunConfig, ScalingConfig
from kubetune.train.torch import TorchTrainer, prepare_data_loader, prepare_model


def train_loop_per_worker(config: dict) -> None:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    x = torch.randn(2048, 8)
    y = x @ torch.arange(1.0, 9.0) + 0.1 * torch.randn(2048)
    loader = prepare_data_loader(DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True))
    model = prepare_model(torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    start = 0
    ckpt = train.get_checkpoint()
    if ckpt is not None:  # every worker restores the same state
        state = torch.load(os.path.join(ckpt.path, "model.pt"))
        model.module.load_state_dict(state["model"])
        start = state["epoch"] + 1
    for epoch in range(start, config["epochs"]):
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        total = 0.0
        for xb, yb in loader:
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(xb).squeeze(-1), yb)
            loss.backward()  # DDP all-reduces the gradients over gloo
            opt.step()
            total += loss.item()
        d = tempfile.mkdtemp()  # report() takes the directory over
        if train.get_context().get_world_rank() == 0:
            torch.save({"model": model.module.state_dict(), "epoch": epoch}, f"{d}/model.pt")
        train.report({"loss": total / len(loader)}, checkpoint=Checkpoint.from_directory(d))


trainer = TorchTrainer(
    train_loop_per_worker,
    train_loop_config={"epochs": 5},
    scaling_config=ScalingConfig(num_workers=4, resources_per_worker={"CPU": 0.5}),
)

if __name__ == "__main__":
    tuner = tune.Tuner(
        trainer,
        param_space={"train_loop_config": {"lr": tune.loguniform(1e-3, 1e-1)}},
        tune_config=tune.TuneConfig(metric="loss", mode="min", num_samples=4),
        run_config=RunConfig(name="torch_ddp"),
    )
    best = tuner.fit().get_best_result()
    print("best lr:", best.config["train_loop_config"]["lr"], "loss:", best.metrics["loss"])
