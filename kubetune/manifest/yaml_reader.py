"""Read a manifest's YAML safely and the way kubectl reads it.

* Limits before anything is built: the text's size, the nesting depth and the number of nodes
  after alias expansion are checked while the node graph is composed, so a "billion laughs"
  document or 5,000-deep nesting fails at once with a message (the graph of aliases is small,
  but everything that walks the data, the schema check included, walks it expanded).
* Scalars resolve as kubectl's YAML reader (YAML 1.1, as go-yaml v2) resolves them: ``y``/``n``
  are booleans too, ``1e-3`` is a number, dates stay strings, and a mapping key that is not a
  string becomes its JSON spelling (the key ``n`` is ``"false"`` on a cluster, and here).
* Duplicate keys are refused (YAML forbids them; kubectl's strict validation refuses them).
* Every field path is mapped to its line, for ``file:line: field`` messages.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_BYTES = 2 * 1024 * 1024  # well above any object the API server stores (etcd: 1.5 MiB)
MAX_DEPTH = 100
MAX_NODES = 100_000  # after alias expansion; a large real manifest has a few thousand

Path_ = tuple[Any, ...]

BOOL_TAG = "tag:yaml.org,2002:bool"
MERGE_TAG = "tag:yaml.org,2002:merge"
# YAML 1.1 booleans as go-yaml v2 (kubectl) reads them; PyYAML lacks y and n
_BOOLS = {
    **{w: True for w in ("y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON")},
    **{w: False for w in ("n", "N", "no", "No", "NO", "false", "False", "FALSE")},
    **{w: False for w in ("off", "Off", "OFF")},
}
_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
_INT = re.compile(
    r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"
)


class YamlLimitError(ValueError):
    """The document is too large, too deep, expands too far, or repeats a key."""

    def __init__(self, line: int | None, message: str, limit: bool = True) -> None:
        super().__init__(message)
        self.line = line
        self.limit = limit  # False: a duplicate key (the message starts with its field)


class _Resolver(yaml.resolver.Resolver):
    pass


# Resolution as go-yaml v2: no timestamps (kept as strings), no sexagesimal numbers,
# y/n booleans, exponents without a dot are floats.
_Resolver.yaml_implicit_resolvers = {}
for _tag, _regexp, _first in (
    (BOOL_TAG, re.compile("^(?:" + "|".join(_BOOLS) + ")$"), list("yYnNtTfFoO")),
    ("tag:yaml.org,2002:int", _INT, list("-+0123456789")),
    ("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789.")),
    ("tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]),
    (MERGE_TAG, re.compile(r"^(?:<<)$"), ["<"]),
):
    _Resolver.add_implicit_resolver(_tag, _regexp, _first)


class _Constructor(yaml.constructor.SafeConstructor):
    def construct_yaml_bool(self, node: ScalarNode) -> bool:
        return _BOOLS[str(self.construct_scalar(node))]

    def construct_yaml_float(self, node: ScalarNode) -> float:
        value = str(self.construct_scalar(node)).replace("_", "")
        lowered = value.lower()
        if lowered.endswith(".inf"):
            return -math.inf if lowered.startswith("-") else math.inf
        if lowered == ".nan":
            return math.nan
        return float(value)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        # non-string keys become their JSON spelling, as kubectl's YAML-to-JSON step writes them
        mapping = super().construct_mapping(node, deep=deep)
        return {json_key(k): v for k, v in mapping.items()}


# (the stubs type add_constructor for the stock loaders only)
_Constructor.add_constructor(BOOL_TAG, _Constructor.construct_yaml_bool)  # type: ignore[type-var]
_Constructor.add_constructor(  # type: ignore[type-var]
    "tag:yaml.org,2002:float", _Constructor.construct_yaml_float
)


def json_key(key: Any) -> Any:
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "null"
    if isinstance(key, (int, float)):
        return repr(key) if isinstance(key, float) else str(key)
    return key


class _Loader(
    yaml.reader.Reader,
    yaml.scanner.Scanner,
    yaml.parser.Parser,
    yaml.composer.Composer,
    _Constructor,
    _Resolver,
):
    def __init__(self, text: str) -> None:
        yaml.reader.Reader.__init__(self, text)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        yaml.composer.Composer.__init__(self)
        _Constructor.__init__(self)
        _Resolver.__init__(self)
        self.depth = 0
        self.sizes: dict[int, int] = {}
        self.aliases = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            event = self.peek_event()
            target = self.anchors.get(event.anchor)
            if target is not None and id(target) not in self.sizes:  # still being composed
                raise YamlLimitError(
                    event.start_mark.line + 1,
                    f"the alias *{event.anchor} refers to its own anchor (recursive data)",
                )
        self.depth += 1
        if self.depth > MAX_DEPTH:
            mark = self.peek_event().start_mark
            raise YamlLimitError(mark.line + 1, f"nested deeper than {MAX_DEPTH} levels")
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        if node is None:
            return None
        size = self.sizes.get(id(node))
        if size is None:
            children: list[Node] = []
            if isinstance(node, MappingNode):
                children = [n for pair in node.value for n in pair]
            elif isinstance(node, SequenceNode):
                children = list(node.value)
            size = 1 + sum(self.sizes[id(c)] for c in children)
            self.sizes[id(node)] = size
        if size > MAX_NODES:
            raise YamlLimitError(
                node.start_mark.line + 1,
                f"expands to more than {MAX_NODES:,} values ({self.aliases} aliases so far):"
                " aliases that nest aliases grow exponentially",
            )
        return node


@dataclass
class Document:
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)
    # (path, line, key text, the boolean kubectl reads) of plain keys that YAML 1.1 reads as
    # booleans
    bool_keys: list[tuple[Path_, int, str, bool]] = field(default_factory=list)


def load(text: str) -> Document:
    """Parse one YAML document within the limits; YamlLimitError or yaml.YAMLError."""
    if len(text.encode("utf-8", "replace")) > MAX_BYTES:
        raise YamlLimitError(None, f"larger than {MAX_BYTES // (1024 * 1024)} MiB")
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return Document(None)
        doc = Document(None)
        _walk(node, (), doc)  # duplicates are checked before merge keys are flattened
        doc.data = loader.construct_document(node)
        return doc
    finally:
        loader.dispose()


def _key(node: Node) -> Any:
    if isinstance(node, ScalarNode):
        if node.tag == BOOL_TAG:
            return json_key(_BOOLS[node.value])
        if node.tag == "tag:yaml.org,2002:null":
            return "null"
        if node.tag == "tag:yaml.org,2002:int":
            try:
                return str(int(node.value.replace("_", ""), 0))
            except ValueError:
                return node.value
        return node.value
    return ("<complex key>", id(node))


def _walk(node: Node, path: Path_, doc: Document) -> None:
    doc.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, MappingNode):
        seen: dict[Any, int] = {}
        merged: list[Node] = []
        for key_node, value in node.value:
            if key_node.tag == MERGE_TAG:
                merged.append(value)
                continue
            key = _key(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise YamlLimitError(
                    line,
                    f"{_dotted((*path, key))}: duplicate key (first at line {seen[key]})",
                    limit=False,
                )
            seen[key] = line
            if (
                isinstance(key_node, ScalarNode)
                and key_node.tag == BOOL_TAG
                and key_node.style is None
            ):
                key_path = (*path, key)
                doc.bool_keys.append((key_path, line, key_node.value, _BOOLS[key_node.value]))
            here = (*path, key)
            doc.lines[here] = line
            _walk(value, here, doc)
        for value in merged:  # keys written here win over merged ones
            sources = value.value if isinstance(value, SequenceNode) else [value]
            for source in sources:
                if isinstance(source, MappingNode):
                    for key_node, item in source.value:
                        key = _key(key_node)
                        if key not in seen:
                            here = (*path, key)
                            doc.lines.setdefault(here, key_node.start_mark.line + 1)
                            _walk(item, here, doc)
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*path, i), doc)


def _dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"
