"""The `.params` reader reproduces what MXNet wrote, exactly, and refuses damaged files."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from sdod.model.mxnet_params import ParamsError, read_params, read_params_bytes
from tests.gluoncv_formula import params_bytes

PARAMS = Path(__file__).resolve().parents[3] / "fixtures" / "mxnet" / "params"
EXPECTED = json.loads((PARAMS / "expected.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_reads_mxnet_files_exactly(name: str) -> None:
    got = read_params(PARAMS / name)
    want = EXPECTED[name]
    assert list(got) == list(want)  # names, in the file's order ("0", "1" for a list)
    for key, meta in want.items():
        array = got[key]
        assert list(array.shape) == meta["shape"] and array.dtype.name == meta["dtype"], key
        assert hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest() == meta["sha256"]
        assert array.ravel()[: len(meta["first"])].tolist() == meta["first"], key


def test_a_written_file_reads_back() -> None:
    arrays = {"arg:w": np.arange(6, dtype=np.float32).reshape(2, 3), "aux:i": np.int32([7])}
    got = read_params_bytes(params_bytes(arrays))
    assert list(got) == ["arg:w", "aux:i"]
    np.testing.assert_array_equal(got["arg:w"], arrays["arg:w"])
    assert got["aux:i"].dtype == np.int32


GOOD = (PARAMS / "checkpoint-0000.params").read_bytes()


@pytest.mark.parametrize(
    ("data", "rule"),
    [
        (GOOD[:-3], "ends inside name 6"),  # truncated in the names
        (GOOD[:200], "ends inside array"),  # truncated in the data
        (GOOD[:10], "too short"),
        (b"PK\x03\x04" + GOOD[4:], "not MXNet's NDArray list magic"),  # a zip/pickle
        (GOOD[:24] + struct.pack("<I", 0xDEADBEEF) + GOOD[28:], "not an NDArray v2/v3 header"),
        (GOOD[:16] + struct.pack("<Q", 1 << 40) + GOOD[24:], "claims 1099511627776 arrays"),
        (GOOD[:28] + struct.pack("<i", 2) + GOOD[32:], "sparse array"),
        (GOOD[:32] + struct.pack("<i", 99) + GOOD[36:], "claims 99 dimensions"),
        (GOOD + b"\0\0\0\0", "bytes follow the last name"),
    ],
    ids=["names", "data", "short", "magic", "array-magic", "count", "sparse", "ndim", "trailing"],
)
def test_damaged_or_forged_files_are_refused(data: bytes, rule: str) -> None:
    with pytest.raises(ParamsError, match=rule):
        read_params_bytes(data, "model.params")


def test_a_bad_dtype_flag_is_refused() -> None:
    data = bytearray(params_bytes({"x": np.float32([1.0])}))
    at = 16 + 8 + 4 + 4 + 4 + 8 + 8  # list header, count, magic, stype, ndim, dim, context
    data[at : at + 4] = struct.pack("<i", 42)
    with pytest.raises(ParamsError, match="unknown dtype flag 42"):
        read_params_bytes(bytes(data), "x.params")


def test_a_missing_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="cannot read it"):
        read_params(tmp_path / "none.params")
