"""``tune.Experiment``: one experiment's specification, for ``tune.run`` / ``run_experiments``."""

from __future__ import annotations

from typing import Any

from kubetune.tune.registry import resolve_trainable

# what Experiment(...) accepts besides name and run: the tune.run arguments of the same name
SPEC_KEYS = (
    "stop",
    "time_budget_s",
    "config",
    "resources_per_trial",
    "num_samples",
    "storage_path",
    "checkpoint_config",
    "trial_name_creator",
    "trial_dirname_creator",
    "log_to_file",
    "max_failures",
    "callbacks",
)


class Experiment:
    """``Experiment(name, run, stop=..., config=..., num_samples=..., ...)`` as in Ray."""

    PUBLIC_KEYS = {"stop", "num_samples", "time_budget_s"}

    def __init__(
        self,
        name: str | None,
        run: Any,
        *,
        stop: Any = None,
        time_budget_s: float | None = None,
        config: dict[str, Any] | None = None,
        resources_per_trial: Any = None,
        num_samples: int = 1,
        storage_path: str | None = None,
        checkpoint_config: Any = None,
        trial_name_creator: Any = None,
        trial_dirname_creator: Any = None,
        log_to_file: bool = False,
        export_formats: Any = None,
        max_failures: int = 0,
        restore: str | None = None,
        callbacks: list[Any] | None = None,
        local_dir: str | None = None,
        **_: Any,
    ) -> None:
        if config is not None and not isinstance(config, dict):
            raise TypeError(f"Experiment.config must be a dict, got {type(config).__name__}")
        if restore is not None:
            raise ValueError(
                "Experiment.restore is not supported: continue an experiment with"
                " Tuner.restore(path, trainable) or tune.run(..., resume=True)"
            )
        self.run = resolve_trainable(run)
        self._name = name
        self.spec: dict[str, Any] = {
            "run": run,
            "stop": stop,
            "time_budget_s": time_budget_s,
            "config": dict(config or {}),
            "resources_per_trial": resources_per_trial,
            "num_samples": num_samples,
            "storage_path": storage_path or local_dir,
            "checkpoint_config": checkpoint_config,
            "trial_name_creator": trial_name_creator,
            "trial_dirname_creator": trial_dirname_creator,
            "log_to_file": log_to_file,
            "max_failures": max_failures,
            "callbacks": callbacks,
        }

    @classmethod
    def from_json(cls, name: str, spec: dict[str, Any]) -> Experiment:
        """Ray's dict form: ``{"run": ..., "config": ..., "stop": ..., ...}``."""
        if "run" not in spec:
            raise ValueError(f"experiment {name!r}: the spec needs 'run' (the trainable)")
        rest = dict(spec)
        run = rest.pop("run")
        unknown = sorted(set(rest) - set(SPEC_KEYS) - {"local_dir", "export_formats"})
        if unknown:
            raise ValueError(f"experiment {name!r}: unknown spec keys {unknown}")
        return cls(name, run, **rest)

    @property
    def name(self) -> str | None:
        return self._name

    @property
    def public_spec(self) -> dict[str, Any]:
        return {k: v for k, v in self.spec.items() if k in self.PUBLIC_KEYS}

    def run_kwargs(self) -> dict[str, Any]:
        """The ``tune.run`` keyword arguments this experiment stands for."""
        out = {k: self.spec[k] for k in SPEC_KEYS if self.spec.get(k) is not None}
        out["name"] = self._name
        return out
