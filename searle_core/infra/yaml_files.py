"""YAML read safely: duplicate keys refused, alias expansion bounded, errors naming file and line.

PyYAML keeps the last of two equal keys without a word, and shares aliased nodes, so nine levels of
nine aliases load in a blink but expand to 9**9 values once copied or serialised. Anchors and merge
keys (``<<: *common``) stay allowed: profiles write shared settings once with them.
"""

from __future__ import annotations

import os

import yaml

from searle_core.infra.errors import InputError, first_line

#: Values a YAML file may expand to through its aliases (a profile has a few hundred).
MAX_EXPANDED_VALUES = 100_000
MERGE_TAG = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (``<<`` merges may still be overridden)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark.line + 1)
                except TypeError:  # an unhashable key: SafeConstructor reports it
                    continue
                if first != key_node.start_mark.line + 1:
                    raise _Duplicate(key, first, key_node.start_mark.line + 1)
        return super().construct_mapping(node, deep=deep)


class _Duplicate(Exception):
    def __init__(self, key, first: int, again: int):
        super().__init__(key, first, again)
        self.key, self.first, self.again = key, first, again


def _expanded_size(root: yaml.Node, path: str | os.PathLike) -> None:
    """Refuse a ``root`` that expands to more than :data:`MAX_EXPANDED_VALUES` values (aliases counted
    every time they are used, as any copy of the loaded data would)."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        sizes[id(node)] = 1  # a recursive alias counts once (SafeLoader builds it as a cycle)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        if total > MAX_EXPANDED_VALUES:
            raise InputError(
                f"{path}, line {node.start_mark.line + 1}: the value here expands through YAML aliases to "
                f"more than {MAX_EXPANDED_VALUES} values; write the values out or use fewer nested aliases"
            )
        sizes[id(node)] = total
        return total

    size(root)


def load_yaml(text: str, path: str | os.PathLike):
    """The data of one YAML document ``text`` read from ``path`` (``None`` when empty); invalid YAML, a
    key given twice in one mapping or an alias bomb is an InputError naming ``path`` and the line."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, path)
        return loader.construct_document(node)
    except _Duplicate as dup:
        raise InputError(
            f"{path}, line {dup.again}: key {dup.key!r} is given twice (first on line {dup.first}); "
            "keep one, a profile says each thing once"
        ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or first_line(str(err))
        raise InputError(f"{path}{where}: not valid YAML ({problem})") from None
    finally:
        loader.dispose()
