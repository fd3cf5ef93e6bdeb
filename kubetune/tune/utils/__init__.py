"""``kubetune.tune.utils``: Ray Tune's trainable utilities."""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = ["diagnose_serialization", "validate_save_restore", "wait_for_gpu"]


def _visible_gpu_ids() -> list[str]:
    for var in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"):
        value = os.environ.get(var, "").strip()
        if value and value not in ("all", "none", "void", "NoDevFiles"):
            return [v.strip() for v in value.split(",") if v.strip()]
    return []


def wait_for_gpu(
    gpu_id: int | str | None = None,
    target_util: float = 0.01,
    retry: int = 20,
    delay_s: int = 5,
    gpu_memory_limit: float | None = None,
) -> bool:
    """Block until the GPU's memory utilisation drops below ``target_util``.

    ``gpu_id`` is an index or a UUID as GPUtil lists them; None means the first GPU this
    trial was given (``CUDA_VISIBLE_DEVICES``). Returns True once the GPU is free; raises
    RuntimeError if GPUtil is missing, no GPU is detected, or the GPU never frees up.
    """
    if gpu_memory_limit:
        raise ValueError("'gpu_memory_limit' is deprecated. Use 'target_util' instead.")
    try:
        import GPUtil
    except ImportError:
        raise RuntimeError("GPUtil must be installed if calling `wait_for_gpu`.") from None
    if gpu_id is None:
        ids = _visible_gpu_ids()
        if not ids:
            raise RuntimeError(
                "No GPU ids found from CUDA_VISIBLE_DEVICES. Was a GPU assigned to this trial?"
            )
        gpu_id = ids[0]
    if isinstance(gpu_id, str) and gpu_id.isdigit():
        gpu_id = int(gpu_id)
    attr = "id" if isinstance(gpu_id, int) else "uuid"
    gpus = GPUtil.getGPUs()
    if not gpus:
        raise RuntimeError(
            "No GPUs detected: GPUtil found none (is nvidia-smi on PATH in this container?)"
        )
    for _ in range(retry):
        gpus = GPUtil.getGPUs()
        by_id = {getattr(g, attr): g for g in gpus}
        if gpu_id not in by_id:
            raise ValueError(
                f"{attr} ({gpu_id}) not found in set of available GPUs {sorted(by_id)}."
            )
        if by_id[gpu_id].memoryUtil < target_util:
            return True
        time.sleep(delay_s)
    raise RuntimeError("GPU memory was not freed.")


class FailTuple(NamedTuple):
    name: str
    obj: Any
    parent: Any

    def __hash__(self) -> int:
        return hash((self.name, id(self.obj), id(self.parent)))

    def __repr__(self) -> str:
        return f"FailTuple({self.name} [obj={self.obj!r}, parent={self.parent!r}])"


def diagnose_serialization(trainable: Callable[..., Any]) -> bool | set[FailTuple]:
    """True if ``trainable`` pickles; else the set of captured objects that do not."""
    import cloudpickle

    def pickles(obj: Any) -> bool:
        try:
            cloudpickle.dumps(obj)
            return True
        except Exception:
            return False

    if pickles(trainable):
        return True
    failures: set[FailTuple] = set()

    def inspect_captured(obj: Any, parent: Any, depth: int) -> None:
        if depth > 3 or not callable(obj):
            return
        try:
            closure = inspect.getclosurevars(obj)
        except (TypeError, ValueError):
            return
        for name, value in {**closure.globals, **closure.nonlocals}.items():
            if inspect.ismodule(value) or pickles(value):
                continue
            failures.add(FailTuple(name, value, parent))
            inspect_captured(value, value, depth + 1)

    inspect_captured(trainable, trainable, 0)
    return failures


def validate_save_restore(
    trainable_cls: type,
    config: dict[str, Any] | None = None,
    num_gpus: int = 0,
    use_object_store: bool = False,
) -> bool:
    """Check that a Trainable class resumes correctly after save and restore.

    Trains one instance three iterations, saves it (to a directory, or to an in-memory object
    with ``use_object_store=True``), restores a second instance from that and checks that the
    second continues at iterations 4 and 5. Raises AssertionError when it does not.
    """
    trainable_1 = trainable_cls(config=config)
    trainable_2 = trainable_cls(config=config)
    try:
        result: dict[str, Any] = {}
        for _ in range(3):
            result = trainable_1.train()
        assert result.get("training_iteration"), (
            "Validation will not pass because it requires `training_iteration` to be returned."
        )
        if use_object_store:
            trainable_2.restore_from_object(trainable_1.save_to_object())
        else:
            trainable_2.restore(trainable_1.save())
        result = trainable_2.train()
        assert result["training_iteration"] == 4, (
            f"restored trainable reported iteration {result['training_iteration']}, expected 4"
        )
        result = trainable_2.train()
        assert result["training_iteration"] == 5
    finally:
        trainable_1.stop()
        trainable_2.stop()
    return True
