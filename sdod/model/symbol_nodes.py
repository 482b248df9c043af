"""The nodes of an MXNet symbol JSON file (`*-symbol.json`), read without MXNet.

`read_symbol` checks the file's structure only: each node an object with an `op`, a `name`,
string `attrs` and `inputs` that name earlier nodes. Nothing is executed or interpreted;
`ints`, `floats`, `number` and `flag` parse one attribute as numbers, tuples or booleans,
with a UserError naming the node and the attribute otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sdod.errors import UserError

MAX_NODES = 100_000


@dataclass(frozen=True)
class Node:
    """One node of the symbol: `inputs` are node indices (output 0 of each)."""

    index: int
    name: str
    op: str
    attrs: dict[str, str]
    inputs: tuple[int, ...]

    def what(self) -> str:
        return f"node {self.name!r} (op {self.op})"


def symbol_error(where: str, text: str) -> UserError:
    """A symbol sdod cannot read or build: UserError naming the file (`where`)."""
    return UserError(f"{where}: {text}")


def _numbers(node: Node, key: str, where: str) -> tuple[float, ...]:
    text = node.attrs[key].strip()
    inner = text[1:-1] if text[:1] in "([" and text[-1:] in ")]" else text
    try:
        return tuple(float(v) for v in inner.split(",") if v.strip() and v.strip() != "None")
    except ValueError:
        raise symbol_error(
            where, f"{node.what()}: attribute {key}={text!r} is not numbers"
        ) from None


def ints(node: Node, key: str, where: str, default: tuple[int, ...]) -> tuple[int, ...]:
    """An integer tuple attribute such as `kernel` `(3, 3)`; `default` when absent."""
    if key not in node.attrs:
        return default
    values = _numbers(node, key, where)
    if any(v != int(v) for v in values):
        raise symbol_error(
            where, f"{node.what()}: attribute {key}={node.attrs[key]!r} is not integers"
        )
    return tuple(int(v) for v in values)


def floats(node: Node, key: str, where: str, default: tuple[float, ...]) -> tuple[float, ...]:
    """A float tuple attribute such as `sizes` `(0.1,0.141)`; `default` when absent."""
    return _numbers(node, key, where) if key in node.attrs else default


def number(node: Node, key: str, where: str, default: float) -> float:
    """A scalar attribute; `default` when absent."""
    if key not in node.attrs:
        return default
    values = _numbers(node, key, where)
    if len(values) != 1:
        raise symbol_error(
            where, f"{node.what()}: attribute {key}={node.attrs[key]!r} is not a number"
        )
    return values[0]


def flag(node: Node, key: str, where: str, default: bool) -> bool:
    """A boolean attribute (`True`/`False`/`1`/`0`); `default` when absent."""
    if key not in node.attrs:
        return default
    text = node.attrs[key].strip().lower()
    if text not in ("true", "false", "1", "0"):
        raise symbol_error(
            where, f"{node.what()}: attribute {key}={node.attrs[key]!r} is not a boolean"
        )
    return text in ("true", "1")


def _node(raw: Any, index: int, count: int, where: str) -> Node:
    if not isinstance(raw, dict) or not isinstance(raw.get("op"), str):
        raise symbol_error(where, f"node {index} is not an object with an 'op' string")
    name = raw.get("name")
    attrs = raw.get("attrs", raw.get("attr", raw.get("param", {}))) or {}
    inputs = raw.get("inputs", [])
    if not isinstance(name, str) or not isinstance(attrs, dict) or not isinstance(inputs, list):
        raise symbol_error(where, f"node {index} has a bad name, attrs or inputs")
    refs = []
    for entry in inputs:
        if (
            not isinstance(entry, list)
            or not entry
            or not all(isinstance(v, int) for v in entry)
            or not 0 <= entry[0] < index
        ):
            raise symbol_error(where, f"node {name!r}: input {entry!r} is not an earlier node")
        if len(entry) > 1 and entry[1] != 0 and raw["op"] not in ("MakeLoss", "BlockGrad"):
            refs.append(-1 - entry[0])  # output > 0 of a node: only loss nodes take those
        else:
            refs.append(entry[0])
    return Node(index, name, raw["op"], {str(k): str(v) for k, v in attrs.items()}, tuple(refs))


def read_symbol(data: bytes, where: str) -> tuple[Node, ...]:
    """The nodes of an MXNet symbol JSON file (structure checked, nothing interpreted)."""
    try:
        raw = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise symbol_error(where, f"not a JSON symbol file ({exc})") from None
    nodes = raw.get("nodes") if isinstance(raw, dict) else None
    if not isinstance(nodes, list) or not nodes:
        raise symbol_error(where, "no 'nodes' list: not an MXNet symbol file (*-symbol.json)")
    if len(nodes) > MAX_NODES:
        raise symbol_error(where, f"{len(nodes)} nodes, over the limit of {MAX_NODES}")
    return tuple(_node(n, i, len(nodes), where) for i, n in enumerate(nodes))
