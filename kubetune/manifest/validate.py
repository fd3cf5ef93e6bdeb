"""Validate a TuneExperiment manifest outside a cluster, with the CRD's own schema.

Errors name the field path and the YAML line, e.g.
``experiment.yaml:14: spec.tuneConfig.mode: 'best' is not one of ['min', 'max']``.
The CRD's CEL rules that matter outside a cluster are checked here too (the param space's
ranges are checked when it is parsed, with the same messages).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

from kubetune.manifest.crd import tune_experiment_crd

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


def _lines(node: yaml.Node, path: Path_ = ()) -> Iterator[tuple[Path_, int]]:
    yield path, node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield (*path, key.value), key.start_mark.line + 1
            yield from _lines(value, (*path, key.value))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _lines(item, (*path, i))


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
            node = yaml.compose(text)
            self.doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{source}:{mark.line + 1}" if mark else source
            raise ManifestError(f"{where}: not valid YAML: {exc}") from None
        self._line: dict[Path_, int] = dict(_lines(node)) if node is not None else {}

    @classmethod
    def from_dict(cls, doc: dict[str, Any], source: str = "<object>") -> Manifest:
        """A manifest already parsed (e.g. a TuneExperiment read from the API server)."""
        return cls(yaml.safe_dump(doc, sort_keys=False), source)

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
        validator = jsonschema.Draft7Validator(_schema())
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        if errors:
            messages = [self.error(tuple(e.absolute_path), e.message).args[0] for e in errors]
            raise ManifestError("\n".join(messages))
        self._check_rules(doc)
        return doc

    def _check_rules(self, doc: dict[str, Any]) -> None:
        """The CRD's CEL rules, for manifests that never reach an API server."""
        tune_config = doc.get("spec", {}).get("tuneConfig", {})
        if "mode" in tune_config and "metric" not in tune_config:
            raise self.error(
                ("spec", "tuneConfig", "mode"), "tuneConfig.mode needs tuneConfig.metric"
            )
        if tune_config.get("numSamples") == 0:
            raise self.error(
                ("spec", "tuneConfig", "numSamples"),
                "tuneConfig.numSamples must be positive, or -1 for no limit",
            )
