"""MXNet's NDArray file format (`.params`), read without MXNet and without executing anything.

What `mx.nd.save` writes (and so `Module.save_checkpoint`'s `prefix-NNNN.params`, with
`arg:`/`aux:` name prefixes, and Gluon's `save_parameters`, with structural names such as
`features.0.weight`), all little-endian:

    uint64 0x112 (list magic), uint64 reserved
    uint64 N, then N arrays:
        uint32 0xF993FAC9 (v2) or 0xF993FACA (v3), int32 storage type (0: dense)
        int32 ndim, int64 dims[ndim]            (ndim 0: an empty array, nothing follows)
        int32 device type, int32 device id, int32 dtype flag, the C-order data
    uint64 M (0 or N), then M names: uint64 length, bytes

A file saved from a list has no names; its arrays are returned under "0", "1", ...
Anything else (another magic, a sparse array, a truncated or over-long file, a shape that
does not fit the file) is refused with a `ParamsError` naming the file, the array and what
was wrong.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from sdod.errors import UserError

LIST_MAGIC = 0x112
ARRAY_MAGICS = {0xF993FAC9: "v2", 0xF993FACA: "v3"}
DTYPES = {  # mshadow's type flags
    0: np.float32,
    1: np.float64,
    2: np.float16,
    3: np.uint8,
    4: np.int32,
    5: np.int8,
    6: np.int64,
    7: np.bool_,
    8: np.int16,
    9: np.uint16,
    10: np.uint32,
    11: np.uint64,
}
MAX_NDIM = 32


class ParamsError(UserError):
    """A `.params` file that is not what MXNet's `mx.nd.save` writes."""


class _Reader:
    def __init__(self, data: bytes, where: str) -> None:
        self.data, self.pos, self.where = data, 0, where

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ParamsError(
                f"{self.where}: the file ends inside {what} (byte {self.pos} of "
                f"{len(self.data)}, {n} more needed): it is truncated or not an MXNet .params file"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str, what: str) -> tuple[int, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))


def _array(r: _Reader, index: int) -> np.ndarray:
    what = f"array {index}"
    (magic,) = r.unpack("I", f"{what}'s header")
    if magic not in ARRAY_MAGICS:
        raise ParamsError(
            f"{r.where}: {what} starts with 0x{magic:08X}, not an NDArray v2/v3 header "
            "(0xF993FAC9/0xF993FACA); files from MXNet before 0.11 are not supported: load "
            "and save them again with a newer MXNet"
        )
    (stype,) = r.unpack("i", f"{what}'s storage type")
    if stype != 0:
        raise ParamsError(
            f"{r.where}: {what} is a sparse array (storage type {stype}); only dense arrays "
            "are read: save it with .tostype('default') first"
        )
    (ndim,) = r.unpack("i", f"{what}'s shape")
    if not 0 <= ndim <= MAX_NDIM:
        raise ParamsError(f"{r.where}: {what} claims {ndim} dimensions: the file is damaged")
    shape = r.unpack(f"{ndim}q", f"{what}'s shape")
    if ndim == 0:
        return np.zeros((0,), np.float32)
    if any(d < 0 for d in shape):
        raise ParamsError(f"{r.where}: {what} has a negative dimension {shape}")
    _dev_type, _dev_id, flag = r.unpack("iii", f"{what}'s context and dtype")
    if flag not in DTYPES:
        raise ParamsError(f"{r.where}: {what} has an unknown dtype flag {flag}")
    dtype = np.dtype(DTYPES[flag]).newbyteorder("<")
    count = int(np.prod(shape, dtype=np.int64))
    raw = r.take(count * dtype.itemsize, f"{what}'s data ({shape}, {dtype.name})")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def read_params_bytes(data: bytes, where: str = "<bytes>") -> dict[str, np.ndarray]:
    """name -> array, in the file's order (see the module docstring)."""
    r = _Reader(data, where)
    if len(data) < 16:
        raise ParamsError(f"{where}: {len(data)} bytes is too short for an MXNet .params file")
    magic, _reserved = r.unpack("QQ", "the file header")
    if magic != LIST_MAGIC:
        raise ParamsError(
            f"{where}: starts with 0x{magic:X}, not MXNet's NDArray list magic 0x112: "
            "not a .params file written by mx.nd.save / save_parameters / save_checkpoint"
        )
    (count,) = r.unpack("Q", "the array count")
    if count > len(data) // 16:  # every array takes more than 16 bytes
        raise ParamsError(f"{where}: claims {count} arrays in {len(data)} bytes: damaged")
    arrays = [_array(r, i) for i in range(count)]
    (nnames,) = r.unpack("Q", "the name count")
    if nnames not in (0, count):
        raise ParamsError(f"{where}: {count} arrays but {nnames} names: the file is damaged")
    names = []
    for i in range(nnames):
        (length,) = r.unpack("Q", f"name {i}'s length")
        raw = r.take(length, f"name {i}")
        try:
            names.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise ParamsError(f"{where}: name {i} is not UTF-8 text: damaged") from None
    if r.pos != len(data):
        raise ParamsError(
            f"{where}: {len(data) - r.pos} bytes follow the last name: damaged or not "
            "one .params file"
        )
    if not names:
        names = [str(i) for i in range(count)]
    if len(set(names)) != len(names):
        raise ParamsError(f"{where}: a name appears twice: damaged")
    return dict(zip(names, arrays, strict=True))


def file_bytes(path: str | os.PathLike[str]) -> bytes:
    """A `.params` file's bytes; ParamsError naming it when it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ParamsError(f"{path}: cannot read it ({exc.strerror})") from None


def read_params(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The arrays of an MXNet `.params` file, name -> numpy array, in the file's order."""
    return read_params_bytes(file_bytes(path), str(path))
