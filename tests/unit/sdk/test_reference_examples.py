"""Every code example of the reference page (ray -> kubetune), through the trial runner."""

from __future__ import annotations

import math
import os
import threading

import pytest

from kubetune import tune
from kubetune.trial import exit_codes
from kubetune.tune.utils import diagnose_serialization, validate_save_restore

from .trainables import MyTrainableClass, PathCheckpoint, objective

FINAL = objective(19, 2, 4)  # x runs 0..19


def test_function_api_reports_every_step(run_trial):
    run = run_trial("trainable_every_step", {"a": 2, "b": 4})
    assert run.code == exit_codes.FINISHED, run.stderr
    results = run.results
    assert [r["training_iteration"] for r in results] == list(range(1, 21))
    assert results[0]["score"] == 4.0
    assert math.isclose(results[-1]["score"], FINAL)


def test_function_api_reports_once(run_trial):
    run = run_trial("trainable_once", {"a": 2, "b": 4})
    assert run.code == 0
    (result,) = run.results
    assert result["training_iteration"] == 1
    assert math.isclose(result["score"], FINAL)


def test_function_api_returned_dict_is_the_final_result(run_trial):
    run = run_trial("trainable_returns", {"a": 2, "b": 4})
    assert run.code == 0
    (result,) = run.results
    assert math.isclose(result["score"], FINAL)
    assert result["done"] is True
    assert result["training_iteration"] == 1


def test_function_api_checkpointing_and_restore(run_trial):
    first = run_trial("train_func", {"epochs": 2})
    assert first.code == 0
    assert first.checkpoints() == ["checkpoint_000000", "checkpoint_000001"]
    results = first.results
    assert [r["checkpoint_dir_name"] for r in results] == first.checkpoints()
    from kubetune.air.checkpoint import Checkpoint

    latest = first.out / "checkpoint_000001"
    assert Checkpoint.from_directory(latest).to_dict() == {"step": 1}

    resumed = run_trial("train_func", {"epochs": 4}, restore_from=str(latest))
    assert resumed.code == 0
    # resumes after step 1: steps 2 and 3, iterations continue from the checkpoint's
    assert [r["training_iteration"] for r in resumed.results] == [3, 4]
    assert [r["iterations_since_restore"] for r in resumed.results] == [1, 2]
    assert Checkpoint.from_directory(resumed.out / "checkpoint_000001").to_dict() == {"step": 3}


def test_class_api_trains_until_stop(run_trial):
    run = run_trial("Trainable", {"a": 2, "b": 4}, stop={"training_iteration": 20})
    assert run.code == exit_codes.STOPPED
    results = run.results
    assert len(results) == 20
    assert math.isclose(results[-1]["score"], FINAL)
    assert results[-1]["done"] is True
    assert run.status["reason"] == "training_iteration >= 20"


def test_class_api_checkpoint_example_restores(run_trial):
    run = run_trial(
        "MyTrainableClass",
        {"input_size": 64},
        stop={"training_iteration": 2},
        checkpoint_at_end=True,
    )
    assert run.code == exit_codes.STOPPED
    assert run.checkpoints() == ["checkpoint_000000"]
    assert os.path.exists(run.out / "checkpoint_000000" / "model.pth")
    resumed = run_trial(
        "MyTrainableClass",
        {"input_size": 64},
        stop={"training_iteration": 3},
        restore_from=str(run.out / "checkpoint_000000"),
    )
    (result,) = resumed.results
    assert result["training_iteration"] == 3
    assert result["model_sum"] == 3 * 64 * 10  # two steps before, one after restore


def test_class_api_checkpoint_example_with_torch(run_trial, tmp_path):
    torch = pytest.importorskip(
        "torch", reason="torch is not a test dependency (its wheels are gigabytes)"
    )
    from torch import nn

    class TorchTrainable(tune.Trainable):
        def setup(self, config):
            self.model = nn.Sequential(
                nn.Linear(config.get("input_size", 32), 32), nn.ReLU(), nn.Linear(32, 10)
            )

        def step(self):
            return {}

        def save_checkpoint(self, tmp_checkpoint_dir):
            checkpoint_path = os.path.join(tmp_checkpoint_dir, "model.pth")
            torch.save(self.model.state_dict(), checkpoint_path)
            return tmp_checkpoint_dir

        def load_checkpoint(self, tmp_checkpoint_dir):
            checkpoint_path = os.path.join(tmp_checkpoint_dir, "model.pth")
            self.model.load_state_dict(torch.load(checkpoint_path))

    assert validate_save_restore(TorchTrainable, config={"input_size": 64})


def test_manual_checkpointing_with_should_checkpoint(run_trial):
    run = run_trial("ManualCheckpoint", {"preempt_at": [2, 5]}, stop={"training_iteration": 6})
    names = [r["checkpoint_dir_name"] for r in run.results]
    assert names == [None, "checkpoint_000000", None, None, "checkpoint_000001", None]


def test_periodic_checkpointing_and_checkpoint_at_end(run_trial):
    run = run_trial(
        "SlowClass",
        {},
        stop={"training_iteration": 25},
        checkpoint_frequency=10,
        checkpoint_at_end=True,
    )
    with_ckpt = [r["training_iteration"] for r in run.results if r["checkpoint_dir_name"]]
    assert with_ckpt == [10, 20, 25]
    assert run.checkpoints() == ["checkpoint_000000", "checkpoint_000001", "checkpoint_000002"]


def test_validate_save_restore_both_ways():
    # both of these should return
    assert validate_save_restore(MyTrainableClass) is True
    assert validate_save_restore(MyTrainableClass, use_object_store=True) is True


def test_reuse_actors_reset_config():
    class Resettable(tune.Trainable):
        def setup(self, config):
            self.lr = config.get("lr", 0.01)

        def step(self):
            return {"lr": self.lr}

        def reset_config(self, new_config):
            if "lr" in new_config:
                self.lr = new_config["lr"]
            self.config = new_config
            return True

    t = Resettable({"lr": 0.1})
    assert t.train()["lr"] == 0.1
    assert t.reset({"lr": 0.5}) is True
    result = t.train()
    assert result["lr"] == 0.5
    assert result["training_iteration"] == 1  # counters start over for the new trial
    assert t.get_config() == {"lr": 0.5}
    t.stop()
    # The base class does not support reuse.
    plain = MyTrainableClass({"input_size": 2})
    assert plain.reset({"input_size": 3}) is False
    plain.stop()


def test_advanced_resources_placement_group(run_trial):
    pgf = tune.PlacementGroupFactory(
        [{"CPU": 1, "GPU": 1}, {"GPU": 1}, {"GPU": 1}, {"GPU": 1}, {"GPU": 1}]
    )
    wrapped = tune.with_resources(MyTrainableClass, pgf)
    from kubetune.tune.helpers import trainable_resources

    assert trainable_resources(wrapped, {}).required_resources == {"CPU": 1, "GPU": 5}
    run = run_trial("session_facts", {}, resources=pgf.to_dict())
    (result,) = run.results
    assert result["bundles"] == pgf.bundles
    assert result["required"] == {"CPU": 1, "GPU": 5}


def test_default_resource_request():
    class Two(tune.Trainable):
        @classmethod
        def default_resource_request(cls, config):
            return tune.PlacementGroupFactory([{"CPU": 1}, {"CPU": 1}])

    from kubetune.tune.helpers import trainable_resources

    assert trainable_resources(Two, {}).required_resources == {"CPU": 2}


def test_get_trial_dir_and_chdir(run_trial, tmp_path):
    run = run_trial("train_func_trial_dir", {}, chdir_to_trial_dir=True)
    (result,) = run.results
    assert result["trial_dir"] == str(run.out)
    assert os.path.realpath(result["cwd"]) == os.path.realpath(run.out)
    stay = run_trial("train_func_trial_dir", {}, chdir_to_trial_dir=False)
    assert os.path.realpath(stay.results[0]["cwd"]) != os.path.realpath(stay.out)


def test_load_checkpoint_gets_path_with_new_prefix(tmp_path):
    trainer = PathCheckpoint({"value": 1})
    trainer.train()
    saved = trainer.save(str(tmp_path / "first"))
    # the checkpoint moves (as when a trial is paused and its checkpoint synced elsewhere)
    os.rename(saved, tmp_path / "moved")
    other = PathCheckpoint({})
    other.restore(str(tmp_path / "moved"))
    assert other.loaded_from == str(tmp_path / "moved" / "my" / "path")
    assert other.train()["value"] == 3
    # "This is used when PAUSED": the object round trip gives a different prefix again
    obj = trainer.save_to_object()
    third = PathCheckpoint({})
    third.restore_from_object(obj)
    assert third.loaded_from.endswith(os.path.join("my", "path"))
    assert not third.loaded_from.startswith(str(tmp_path))
    assert third.value == 2
    for t in (trainer, other, third):
        t.stop()


def test_save_checkpoint_dict_is_passed_back():
    class Example(tune.Trainable):
        def save_checkpoint(self, checkpoint_path):
            return {"my_data": 1}

        def load_checkpoint(self, checkpoint_dict):
            self.seen = checkpoint_dict["my_data"]

    trainer = Example()
    restored = Example()
    restored.restore_from_object(trainer.save_to_object())
    assert restored.seen == 1


def test_save_checkpoint_outside_directory_is_an_error(run_trial):
    run = run_trial("BadSavePath", {})
    assert run.code == exit_codes.ERRORED
    assert "/tmp/NEW_CHECKPOINT_PATH/my_checkpoint_file" in run.error
    assert "not inside the checkpoint directory" in run.error
    assert run.checkpoints() == []
    assert run.results == []


def test_diagnose_serialization_example():
    # this is not serializable
    e = threading.Event()

    def test():
        print(e)

    found = diagnose_serialization(test)
    assert found is not True
    assert {f.name for f in found} == {"e"}

    # correct implementation
    def test():
        e = threading.Event()
        print(e)

    assert diagnose_serialization(test) is True


def test_with_parameters_function_and_class(tmp_path):
    from kubetune.tune.helpers import resolve_parameters, store_parameters

    data = list(range(5))
    seen = {}

    def train(config, data=None):
        seen["sum"] = sum(data)

    wrapped = tune.with_parameters(train, data=data)
    wrapped({})
    assert seen["sum"] == 10

    class MyTrainable(tune.Trainable):
        def setup(self, config, data=None):
            self.data = data
            self.iter = iter(self.data)
            self.next_sample = next(self.iter)

        def step(self):
            loss = self.next_sample
            try:
                self.next_sample = next(self.iter)
            except StopIteration:
                return {"loss": loss, "done": True}
            return {"loss": loss}

    cls = tune.with_parameters(MyTrainable, data=data)
    t = cls({})
    results = t.train_buffered(buffer_time_s=10)
    assert [r["loss"] for r in results] == data and results[-1]["done"] is True

    # stored once, shipped as references, loaded inside the trial process
    light = store_parameters(wrapped, str(tmp_path / "params"))
    assert os.path.exists(tmp_path / "params" / "data.pkl")
    assert "ParamRef" in repr(light._kubetune_parameters["data"])
    os.environ["KUBETUNE_PARAMS_DIR"] = str(tmp_path / "params")
    try:
        assert resolve_parameters(light._kubetune_parameters)["data"] == data
    finally:
        del os.environ["KUBETUNE_PARAMS_DIR"]
