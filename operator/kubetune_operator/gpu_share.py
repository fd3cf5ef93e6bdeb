"""Fractional GPUs (Ray's ``{"GPU": 0.5}``) as a shared GPU resource, never rounded.

Kubernetes counts devices in whole units. GPU sharing makes a unit smaller: NVIDIA's device
plugin with time-slicing or MPS (``sharing.timeSlicing`` / ``sharing.mps``, ``replicas: N``)
advertises N units per physical GPU, under ``nvidia.com/gpu`` or, with
``renameByDefault: true``, under ``nvidia.com/gpu.shared``. The operator maps a trial's GPU
total to that resource when the chart names it (``trial.sharedGpuResourceName``, with
``trial.sharedGpuReplicas`` = the N of the device plugin's config):

- a whole total (``GPU: 1``, or two bundles of 0.5 summed in one pod) asks for whole GPUs on
  ``trial.gpuResourceName``, as before;
- a fraction asks for ``total * N`` units of the shared resource: 0.5 with N=2 is one unit,
  0.25 with N=4 is one, 0.5 with N=4 is two; a total that is not a whole number of units
  (0.3 with N=2) is refused, naming the bundle's field, instead of rounding up or down;
- when both names are the same resource (time-slicing without renaming), every GPU is N
  units, whole ones too, so that the counts stay in one currency;
- without a shared resource a fraction is refused, naming the field
  (``spec.resources.bundles[i].GPU``): the experiment stalls with that message.

Time-slicing and MPS give no memory isolation: a unit is a share of the device's time, and
trials sharing a GPU must fit in its memory together (as with Ray's fractional GPUs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

_EPS = 1e-9


@dataclass(frozen=True)
class SharedGpu:
    resource: str  # e.g. nvidia.com/gpu.shared
    replicas: int  # units the device plugin advertises per physical GPU


def gpu_limit(
    bundles: list[dict[str, Any]], whole_resource: str, shared: SharedGpu | None
) -> tuple[str, int] | None:
    """(resource name, count) for a trial's GPU bundles, or None when it asks for none."""
    amounts = [float(b.get("GPU") or 0) for b in bundles]
    total = sum(amounts)
    if total <= _EPS:
        return None
    same = shared is not None and shared.resource == whole_resource
    if abs(total - round(total)) <= _EPS and not same:
        return whole_resource, round(total)
    index = next((i for i, a in enumerate(amounts) if abs(a - round(a)) > _EPS), 0)
    field = f"spec.resources.bundles[{index}].GPU"
    if shared is None:
        raise ValueError(
            f"{field}: {amounts[index]:g} is a share of a GPU (the trial asks for {total:g}),"
            " and this operator has no shared GPU resource to map it to: set the chart's"
            " trial.sharedGpuResourceName and trial.sharedGpuReplicas (GPU time-slicing or MPS"
            " replicas), or ask for whole GPUs"
        )
    units = total * shared.replicas
    if abs(units - round(units)) > 1e-6:
        step = 1 / shared.replicas
        raise ValueError(
            f"{field}: the trial's {total:g} GPU is {units:g} units of {shared.resource}"
            f" ({shared.replicas} per GPU), not a whole number; use a multiple of {step:g}"
            f" (e.g. {math.ceil(units) * step:g})"
        )
    return shared.resource, round(units)
