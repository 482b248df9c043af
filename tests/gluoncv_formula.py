"""Test helpers for the GluonCV fixtures: the closed-formula weights the fixtures were made
with (tests/fixtures/mxnet/README.md, `gluoncv_nets/`), and a writer of MXNet's NDArray
`.params` format, to make files that the importer reads as a user's would be read."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

NETS = Path(__file__).resolve().parent / "fixtures" / "mxnet" / "gluoncv_nets"
FLAGS = {np.dtype(np.float32): 0, np.dtype(np.float16): 2, np.dtype(np.int32): 4}


def formula(k: int, kind: str, shape: list[int]) -> np.ndarray:
    s = np.sin(0.37 * np.arange(int(np.prod(shape))) + 1.3 * k)
    values = {
        "weight": lambda: s * 2 / np.sqrt(np.prod(shape[1:])),
        "bias": lambda: 0.01 * s,
        "beta": lambda: 0.01 * s,
        "gamma": lambda: 1 + 0.1 * s,
        "running_mean": lambda: 0.1 * s,
        "running_var": lambda: 1 + 0.25 * (1 + s),
        "scale": lambda: 20 + s,
    }[kind]()
    return values.reshape(shape).astype(np.float32)


def formula_params(network: str) -> dict[str, np.ndarray]:
    """GluonCV's parameters of `network` by their exported names, as the fixture set them
    (constants too: VGG's init_scale with its value, the anchor grids as zeros)."""
    listing = json.loads((NETS / f"{network}.json").read_text())["params"]
    out = {}
    for p in listing:
        if p["kind"] is not None:
            out[p["name"]] = formula(p["k"], p["kind"], p["shape"])
        elif p.get("value") is not None:
            out[p["name"]] = np.asarray(p["value"], np.float32).reshape(p["shape"])
        else:  # anchor grids: GluonCV saves them; the importer must skip them
            out[p["name"]] = np.zeros(p["shape"], np.float32)
    return out


def params_bytes(arrays: dict[str, np.ndarray], named: bool = True) -> bytes:
    """What `mx.nd.save` writes for a dict (or, `named=False`, a list) of dense arrays."""
    out = [struct.pack("<QQQ", 0x112, 0, len(arrays))]
    for value in arrays.values():
        value = np.ascontiguousarray(value)
        out.append(struct.pack("<Iii", 0xF993FAC9, 0, value.ndim))
        out.append(struct.pack(f"<{value.ndim}q", *value.shape))
        out.append(struct.pack("<iii", 1, 0, FLAGS[value.dtype]))
        out.append(value.astype(value.dtype.newbyteorder("<")).tobytes())
    names = list(arrays) if named else []
    out.append(struct.pack("<Q", len(names)))
    for name in names:
        raw = name.encode()
        out.append(struct.pack("<Q", len(raw)) + raw)
    return b"".join(out)
