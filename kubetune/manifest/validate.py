"""Validate a TuneExperiment manifest outside a cluster, with the CRD's own schema.

Errors name the field path and the YAML line, e.g.
``experiment.yaml:14: spec.tuneConfig.mode: 'best' is not one of ['min', 'max']``.
The CRD's CEL rules that matter outside a cluster are checked here too (the param space's
ranges are checked when it is parsed, with the same messages).
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from kubetune.manifest import strict, yaml_reader
from kubetune.manifest.crd import tune_experiment_crd
from kubetune.manifest.spec_schema import WHOLE_GPUS_ABOVE_ONE, WHOLE_RESOURCES

Path_ = tuple[Any, ...]


class ManifestError(ValueError):
    """A manifest is invalid; ``str()`` names the file, line and field."""


def _schema() -> dict[str, Any]:
    crd = tune_experiment_crd()
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return _draft7(schema)


def _draft7(node: Any) -> Any:
    """OpenAPI v3's ``exclusiveMinimum: true`` (a flag on ``minimum``) as draft 7 writes it
    (the bound itself); read as a number, ``true`` would be a bound of 1."""
    if isinstance(node, list):
        return [_draft7(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _draft7(v) for k, v in node.items()}
    for flag, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(flag), bool) and out.pop(flag) and bound in out:
            out[flag] = out.pop(bound)
    return out


def field_name(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"


class Manifest:
    """A parsed manifest that remembers where each field came from."""

    def __init__(self, text: str, source: str = "<manifest>") -> None:
        self.source = source
        try:
            parsed = yaml_reader.load(text)
        except yaml_reader.YamlLimitError as exc:
            where = f"{source}:{exc.line}" if exc.line else source
            what = "refused: " if exc.limit else ""
            raise ManifestError(f"{where}: {what}{exc}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{source}:{mark.line + 1}" if mark else source
            raise ManifestError(f"{where}: not valid YAML: {exc}") from None
        self.doc = parsed.data
        self._line: dict[Path_, int] = parsed.lines
        self.warnings: list[str] = [
            f"{source}:{line}: {field_name(path)}: warning: kubectl reads the key {text} as"
            f" the boolean {str(value).lower()} (YAML 1.1), so the config key is"
            f" {str(value).lower()!r} on a cluster and here; quote it ('{text}':) to keep"
            " the name"
            for path, line, text, value in parsed.bool_keys
            if path[:2] == ("spec", "paramSpace")
            or path[:4] == ("spec", "tuneConfig", "scheduler", "hyperparamMutations")
        ]

    @classmethod
    def from_dict(cls, doc: dict[str, Any], source: str = "<object>") -> Manifest:
        """A manifest already parsed (e.g. a TuneExperiment read from the API server)."""
        # JSON is YAML whose strings are all quoted: keys such as `n` or `on` stay strings
        # (a plain YAML dump leaves them bare, and the kubectl-style reader makes them booleans)
        return cls(json.dumps(doc, indent=2), source)

    @classmethod
    def load(cls, path: str) -> Manifest:
        try:
            with open(path, encoding="utf-8") as f:
                return cls(f.read(), path)
        except FileNotFoundError:
            raise ManifestError(f"{path}: no such file") from None

    def where(self, path: Path_) -> str:
        probe = tuple(path)
        while probe and probe not in self._line:
            probe = probe[:-1]
        line = self._line.get(probe)
        return f"{self.source}:{line}" if line else self.source

    def error(self, path: Path_, message: str) -> ManifestError:
        return ManifestError(f"{self.where(path)}: {field_name(path)}: {message}")

    def validate(self) -> dict[str, Any]:
        """Check the manifest against the CRD schema; return it as a dict."""
        import jsonschema

        doc = self.doc
        if not isinstance(doc, dict):
            raise ManifestError(f"{self.source}: a TuneExperiment manifest must be a mapping")
        if doc.get("kind") != "TuneExperiment":
            raise self.error(("kind",), f"expected TuneExperiment, got {doc.get('kind')!r}")
        if doc.get("apiVersion") != "kubetune.io/v1alpha1":
            raise self.error(
                ("apiVersion",), f"expected kubetune.io/v1alpha1, got {doc.get('apiVersion')!r}"
            )
        schema = _schema()
        issues: list[tuple[Path_, str]] = list(strict.unknown_fields(doc, schema))
        validator = jsonschema.Draft7Validator(schema)
        issues += [(tuple(e.absolute_path), e.message) for e in validator.iter_errors(doc)]
        issues += strict.non_finite(doc)
        meta = doc.get("metadata")
        if isinstance(meta, dict) and "name" in meta:
            problem = strict.name_issue(meta["name"])
            if problem:
                issues.append((("metadata", "name"), problem))
        spec = doc.get("spec")
        if isinstance(spec, dict):
            issues += strict.param_space_issues(spec.get("paramSpace"), ("spec", "paramSpace"))
            run_config = spec.get("runConfig")
            if isinstance(run_config, dict):
                stop_path = ("spec", "runConfig", "stop")
                issues += strict.stop_issues(run_config.get("stop"), stop_path)
            scheduler = (spec.get("tuneConfig") or {}).get("scheduler") or {}
            if isinstance(scheduler, dict):
                path = ("spec", "tuneConfig", "scheduler", "hyperparamMutations")
                issues += strict.param_space_issues(scheduler.get("hyperparamMutations"), path)
        if issues:
            unique = dict.fromkeys(self.error(p, m).args[0] for p, m in self._ordered(issues))
            raise ManifestError("\n".join(unique))
        self._check_rules(doc)
        return doc

    def _ordered(self, issues: list[tuple[Path_, str]]) -> list[tuple[Path_, str]]:
        def line(issue: tuple[Path_, str]) -> int:
            where = self.where(issue[0]).rpartition(":")[2]
            return int(where) if where.isdigit() else 0

        return sorted(issues, key=line)

    def _check_rules(self, doc: dict[str, Any]) -> None:
        """The CRD's CEL rules, for manifests that never reach an API server."""
        tune_config = doc.get("spec", {}).get("tuneConfig", {})
        if "mode" in tune_config and "metric" not in tune_config:
            raise self.error(
                ("spec", "tuneConfig", "mode"), "tuneConfig.mode needs tuneConfig.metric"
            )
        resources = doc.get("spec", {}).get("resources") or {}
        totals: dict[str, float] = {}
        for bundle in resources.get("bundles") or []:
            for key, amount in bundle.items():
                totals[key] = totals.get(key, 0.0) + float(amount)
            gpu = float(bundle.get("GPU") or 0)
            if gpu > 1 and not gpu.is_integer():
                raise self.error(
                    ("spec", "resources", "bundles"), f"GPU is {gpu:g}: {WHOLE_GPUS_ABOVE_ONE}"
                )
        for key, total in totals.items():
            # a share of a GPU is the operator's to map or refuse (trial.sharedGpuResourceName)
            if key not in ("CPU", "memory", "GPU") and not total.is_integer():
                raise self.error(
                    ("spec", "resources", "bundles"), f"{key} sums to {total:g}: {WHOLE_RESOURCES}"
                )
        workers = resources.get("workers")
        if isinstance(workers, int) and len(resources.get("bundles") or []) != workers + 1:
            raise self.error(
                ("spec", "resources", "workers"),
                "workers needs one bundle per worker after the trainer's bundle"
                " (size(bundles) == workers + 1)",
            )
        if tune_config.get("numSamples") == 0:
            raise self.error(
                ("spec", "tuneConfig", "numSamples"),
                "tuneConfig.numSamples must be positive, or -1 for no limit",
            )
