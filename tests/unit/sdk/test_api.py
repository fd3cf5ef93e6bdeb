"""Checkpoint, Trainable driver methods, PlacementGroupFactory, session, wait_for_gpu."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kubetune import tune
from kubetune.air import session
from kubetune.air.checkpoint import Checkpoint
from kubetune.tune.utils import wait_for_gpu
from tests.unit.nvidia_smi import gpu_line, write_nvidia_smi

from .trainables import MyTrainableClass, SlowClass


# -- Checkpoint -----------------------------------------------------------------------------
def test_checkpoint_dict_directory_round_trips(tmp_path):
    ckpt = Checkpoint.from_dict({"step": 3, "weights": [1, 2]})
    assert ckpt.to_dict() == {"step": 3, "weights": [1, 2]}
    d = ckpt.to_directory(str(tmp_path / "d"))
    assert Checkpoint.from_directory(d).to_dict() == {"step": 3, "weights": [1, 2]}
    with ckpt.as_directory() as tmp:
        assert os.path.isdir(tmp)
    assert not os.path.exists(tmp)  # the temporary directory is gone afterwards


def test_checkpoint_directory_to_dict_and_back(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "model.bin").write_bytes(b"\x00\x01")
    as_dict = Checkpoint.from_directory(src).to_dict()
    out = Checkpoint.from_dict(as_dict).to_directory(str(tmp_path / "out"))
    assert (Path(out) / "sub" / "model.bin").read_bytes() == b"\x00\x01"
    with Checkpoint.from_directory(src).as_directory() as d:
        assert d == str(src)  # a directory checkpoint is used in place


def test_checkpoint_metadata(tmp_path):
    ckpt = Checkpoint.from_dict({"a": 1})
    ckpt.set_metadata({"epoch": 1})
    ckpt.update_metadata({"loss": 0.5})
    assert ckpt.get_metadata() == {"epoch": 1, "loss": 0.5}
    d = ckpt.to_directory(str(tmp_path / "m"))
    on_disk = Checkpoint.from_directory(d)
    assert on_disk.get_metadata() == {"epoch": 1, "loss": 0.5}
    on_disk.update_metadata({"loss": 0.25})
    assert Checkpoint.from_directory(d).get_metadata()["loss"] == 0.25
    with pytest.raises(TypeError, match="JSON-serialisable"):
        ckpt.set_metadata({"bad": object()})


def test_checkpoint_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint directory does not exist"):
        Checkpoint.from_directory(tmp_path / "missing")
    with pytest.raises(TypeError, match="expects a dict"):
        Checkpoint.from_dict([1, 2])  # type: ignore[arg-type]


# -- Trainable driver methods ---------------------------------------------------------------
def test_trainable_properties_and_auto_filled_metrics():
    t = SlowClass({"lr": 0.1})
    assert t.iteration == t.training_iteration == 0
    result = t.train()
    assert result["training_iteration"] == 1 == t.iteration
    assert result["done"] is False
    assert result["config"] == {"lr": 0.1} == t.get_config()
    assert result["time_this_iter_s"] >= 0.01
    assert os.path.isdir(t.logdir)
    assert t.trial_id == "default" and t.trial_name == "default"
    assert t.trial_resources is None
    auto = t.get_auto_filled_metrics(debug_metrics_only=True)
    assert set(auto) == {"trial_id", "date", "timestamp", "pid", "hostname", "node_ip", "config"}
    full = t.get_auto_filled_metrics(time_this_iter=1.5)
    assert full["time_this_iter_s"] == 1.5 and full["iterations_since_restore"] == 1
    logdir = t.logdir
    t.stop()
    assert not os.path.exists(logdir)


def test_save_restore_delete_and_fallback(tmp_path):
    t = SlowClass({})
    t.train()
    t.train()
    path = t.save()
    assert os.path.isdir(path)
    other = SlowClass({})
    other.restore(path)
    assert other.iteration == 2
    assert other.train()["training_iteration"] == 3
    assert other.train()["iterations_since_restore"] == 2
    t.delete_checkpoint(path)
    assert not os.path.exists(path)
    with pytest.raises(FileNotFoundError):
        other.restore(path)
    # fallback_to_latest picks the newest checkpoint_* in the logdir
    latest = t.save(os.path.join(t.logdir, "checkpoint_000007"))
    t.restore("/does/not/exist", fallback_to_latest=True)
    assert latest.endswith("checkpoint_000007")
    t.stop()
    other.stop()


def test_restore_from_checkpoint_object():
    t = MyTrainableClass({"input_size": 2})
    t.train()
    ckpt = Checkpoint.from_directory(t.save())
    other = MyTrainableClass({"input_size": 2})
    other.restore(ckpt)
    assert other.steps == 1
    t.stop()
    other.stop()


def test_train_buffered_limits():
    t = SlowClass({})
    assert len(t.train_buffered(buffer_time_s=60, max_buffer_length=4)) == 4
    assert len(t.train_buffered(buffer_time_s=0)) == 1  # always at least one result
    t.stop()


def test_export_model_passes_formats_and_dir(tmp_path):
    class Exporting(tune.Trainable):
        def _export_model(self, export_formats, export_dir):
            return {f: os.path.join(export_dir, f) for f in export_formats}

    t = Exporting()
    assert t.export_model("onnx", str(tmp_path)) == {"onnx": str(tmp_path / "onnx")}
    assert t.export_model(["a", "b"]) == {
        "a": os.path.join(t.logdir, "a"),
        "b": os.path.join(t.logdir, "b"),
    }
    assert tune.Trainable().export_model("x") == {}


def test_step_must_return_a_dict():
    class Bad(tune.Trainable):
        def step(self):
            return 3

    with pytest.raises(TypeError, match=r"step\(\) must return a dict"):
        Bad().train()
    with pytest.raises(NotImplementedError, match="must implement step"):
        tune.Trainable().train()


# -- session outside a trial ----------------------------------------------------------------
@pytest.mark.parametrize(
    "call",
    [
        lambda: session.report({"x": 1}),
        session.get_checkpoint,
        session.get_trial_name,
        session.get_trial_id,
        session.get_trial_resources,
        session.get_trial_dir,
        session.get_experiment_name,
    ],
)
def test_session_outside_a_trial_says_so(call):
    with pytest.raises(RuntimeError, match="outside a kubetune trial"):
        call()


# -- PlacementGroupFactory and with_resources -----------------------------------------------
def test_placement_group_factory():
    pgf = tune.PlacementGroupFactory([{"CPU": 1, "GPU": 1}, {"GPU": 2}], strategy="STRICT_PACK")
    assert pgf.required_resources == {"CPU": 1, "GPU": 3}
    assert pgf.bundles == [{"CPU": 1, "GPU": 1}, {"GPU": 2}]
    assert tune.PlacementGroupFactory.from_dict(pgf.to_dict()) == pgf
    with pytest.raises(ValueError, match="strategy must be one of"):
        tune.PlacementGroupFactory([{"CPU": 1}], strategy="WIDE")
    with pytest.raises(ValueError, match=r"bundles\[1\]\['GPU'\] must be a number >= 0"):
        tune.PlacementGroupFactory([{"CPU": 1}, {"GPU": -1}])
    with pytest.raises(ValueError, match="non-empty list"):
        tune.PlacementGroupFactory([])


def test_with_resources_forms():
    from kubetune.tune.helpers import trainable_resources

    def fn(config):
        pass

    assert trainable_resources(tune.with_resources(fn, {"cpu": 2, "gpu": 1}), {}).bundles == [
        {"CPU": 2, "GPU": 1}
    ]
    by_config = tune.with_resources(fn, lambda c: {"gpu": c["gpus"]})
    assert trainable_resources(by_config, {"gpus": 4}).required_resources == {"GPU": 4}
    assert trainable_resources(fn, {}) is None
    with pytest.raises(ValueError, match=r"bundles\[0\]\['GPU'\] must be a number"):
        tune.with_resources(fn, {"gpu": "two"})
    with pytest.raises(TypeError, match="resources must be a dict"):
        tune.with_resources(fn, 3)


# -- wait_for_gpu, with GPUtil reading a stand-in nvidia-smi --------------------------------
@pytest.fixture
def fake_nvidia_smi(tmp_path, monkeypatch):
    """An nvidia-smi on PATH that prints what GPUtil parses; memory use drops per call."""
    counter = tmp_path / "calls"
    counter.write_text("0")
    write_nvidia_smi(
        tmp_path,
        gpu_line(0, "GPU-aaaa", utilization=50, used="$used", free=8000, name="Fake GPU"),
        prelude=(f"n=$(cat {counter}); echo $((n+1)) > {counter}\nused=$(( n >= 2 ? 0 : 8000 ))\n"),
    )
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    return counter


def test_wait_for_gpu_waits_until_memory_frees(fake_nvidia_smi):
    assert wait_for_gpu(0, retry=5, delay_s=0) is True
    assert int(fake_nvidia_smi.read_text()) >= 3  # it polled until the third reading


def test_wait_for_gpu_by_uuid_and_from_visible_devices(fake_nvidia_smi, monkeypatch):
    assert wait_for_gpu("GPU-aaaa", retry=5, delay_s=0) is True
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert wait_for_gpu(retry=5, delay_s=0) is True


def test_wait_for_gpu_errors(fake_nvidia_smi, monkeypatch):
    with pytest.raises(ValueError, match=r"id \(3\) not found"):
        wait_for_gpu(3, retry=1, delay_s=0)
    fake_nvidia_smi.write_text("0")  # memory is in use again
    with pytest.raises(RuntimeError, match="GPU memory was not freed"):
        wait_for_gpu(0, retry=1, delay_s=0)
    with pytest.raises(ValueError, match="deprecated"):
        wait_for_gpu(0, gpu_memory_limit=0.5)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("NVIDIA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(RuntimeError, match="No GPU ids found"):
        wait_for_gpu()


def test_wait_for_gpu_without_any_gpu(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi: GPUtil sees nothing
    with pytest.raises(RuntimeError, match="No GPUs detected"):
        wait_for_gpu(0, retry=1, delay_s=0)
