"""YAML loading with the document's size capped *before* anything else touches it.

``yaml.safe_load`` builds no arbitrary objects, but aliases are shared references: a 771-byte
"billion laughs" document (nine anchors, each a list of nine aliases of the previous one) becomes
a structure of 9**9 leaves as soon as anything walks it (hashing the config, pydantic
validation, ``json.dumps``) and exhausts memory. :func:`load_yaml_text` composes the node graph
(cheap: aliases stay shared), counts the nodes it would expand to, the aliases and the nesting
depth, and refuses the document with a :class:`~eo_fusion.errors.ConfigError` (exit 2) if any
exceeds its cap; recursive aliases (``&a [*a]``) are refused too. Only then is it constructed.
"""

from __future__ import annotations

from typing import Any

import yaml

from eo_fusion.errors import ConfigError

__all__ = ["MAX_ALIASES", "MAX_DEPTH", "MAX_NODES", "load_yaml_text"]

#: Caps far above any real job/catalog/model file (the largest shipped YAML has < 500 nodes).
MAX_NODES = 200_000
MAX_ALIASES = 1_000
MAX_DEPTH = 64


class _CountingLoader(yaml.SafeLoader):
    """SafeLoader that counts alias events while composing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise _TooBig(f"more than {MAX_ALIASES} aliases")
        return super().compose_node(parent, index)


class _TooBig(Exception):
    pass


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _expanded_size(root: yaml.Node) -> int:
    """Nodes the document expands to with every alias inlined (memoised, iterative: no
    recursion limit, shared subtrees counted once per use, cycles refused)."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            total = 1 + sum(sizes[id(c)] for c in _children(node))
            if total > MAX_NODES:
                raise _TooBig(f"it expands to more than {MAX_NODES:,} nodes")
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise _TooBig("an alias refers to its own anchor (recursive structure)")
        if depth > MAX_DEPTH:
            raise _TooBig(f"it nests deeper than {MAX_DEPTH} levels")
        on_path.add(key)
        stack.append((node, depth, True))
        for child in _children(node):
            if id(child) in on_path:
                raise _TooBig("an alias refers to its own anchor (recursive structure)")
            if id(child) not in sizes:
                stack.append((child, depth + 1, False))
    return sizes[id(root)]


def load_yaml_text(text: str, *, source: str) -> Any:
    """Parse ``text`` like ``yaml.safe_load`` after checking its expanded size, alias count and
    depth; errors name ``source`` (a file path) and are :class:`ConfigError` (exit 2)."""
    loader = _CountingLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node)
        return loader.construct_document(node)
    except _TooBig as e:
        raise ConfigError(
            f"{source}: YAML refused before loading: {e} (an alias/anchor bomb?)",
            fix="write the values out instead of nesting anchors and aliases",
        ) from None
    except RecursionError:
        raise ConfigError(
            f"{source}: YAML refused: nested too deeply", fix="flatten the document"
        ) from None
    finally:
        loader.dispose()
