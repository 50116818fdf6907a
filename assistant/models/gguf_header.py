"""The GGUF header, read directly: fast format checks that never load the weights.

GGUF v2/v3: magic, version, tensor count, key/value count, typed key/value pairs, then the tensor
infos (name, dims, ggml type, offset) and, aligned, the tensor data. Reading the header takes
milliseconds even for GB files (it is memory-mapped) and also works on a file whose tensor data is
cut off, which ``gguf.GGUFReader`` refuses; ``check_gguf`` then tells a truncated file from a
complete one by comparing the bytes the tensors need with the file's size.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assistant.errors import ModelCorruptError

_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9
# ggml type -> (block size, bytes per block), as in gguf.constants.GGML_QUANT_SIZES
# fmt: off
_GGML_SIZES = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
               9: (32, 40), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210),
               15: (256, 292), 16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18),
               21: (256, 110), 22: (256, 82), 23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4),
               27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66),
               39: (32, 17), 40: (64, 36), 41: (128, 18)}
# fmt: on


@dataclass(frozen=True)
class GGUFHeader:
    version: int
    tensor_count: int
    metadata: dict[str, Any]
    """Scalar and string values; arrays are skipped (their value is their length)."""
    data_offset: int
    expected_size: int
    """Bytes the file needs to hold all tensor data; -1 if a tensor type is unknown."""
    file_size: int


def read_gguf_header(path: Path) -> GGUFHeader:
    """Parse the header only (milliseconds even for GB files). Raises ModelCorruptError if it is not
    a GGUF file or the header itself is cut off. Does not compare ``expected_size`` with the file."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        if fh.read(4) != b"GGUF":
            raise ModelCorruptError(f"{path}: not a GGUF file (no GGUF magic at the start)")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            try:
                return _parse_gguf(buf, size)
            except (struct.error, IndexError, UnicodeDecodeError, OverflowError) as err:
                raise ModelCorruptError(f"{path}: GGUF header is truncated or malformed ({err})") from err
            except ValueError as err:
                raise ModelCorruptError(f"{path}: {err}") from err


def _parse_gguf(buf: mmap.mmap, size: int) -> GGUFHeader:
    u32, u64 = struct.Struct("<I"), struct.Struct("<Q")
    pos = 4

    def take(st: struct.Struct) -> Any:
        nonlocal pos
        if pos + st.size > size:
            raise struct.error(f"header ends past the end of the file at byte {pos}")
        (value,) = st.unpack_from(buf, pos)
        pos += st.size
        return value

    def string() -> str:
        nonlocal pos
        n = take(u64)
        if pos + n > size:
            raise struct.error(f"string of {n} bytes at byte {pos} runs past the end of the file")
        pos += n
        return bytes(buf[pos - n : pos]).decode("utf-8")

    def value(vtype: int) -> Any:
        nonlocal pos
        if vtype == _GGUF_STRING:
            return string()
        if vtype == _GGUF_ARRAY:
            etype, count = take(u32), take(u64)
            if etype == _GGUF_STRING:
                at, unpack = pos, u64.unpack_from  # hot loop: 50k-150k tokens and merges
                for _ in range(count):
                    at += 8 + unpack(buf, at)[0]
                pos = at
                if pos > size:
                    raise struct.error("string array runs past the end of the file")
            elif etype in _GGUF_SCALARS:
                pos += count * struct.calcsize("<" + _GGUF_SCALARS[etype])
            else:
                for _ in range(count):
                    value(etype)
            return count
        if vtype not in _GGUF_SCALARS:
            raise ValueError(f"unknown GGUF value type {vtype} at byte {pos}")
        return take(struct.Struct("<" + _GGUF_SCALARS[vtype]))

    version = take(u32)
    if version not in (2, 3):
        raise ValueError(f"GGUF version {version} is not supported (2 or 3)")
    n_tensors, n_kv = take(u64), take(u64)
    meta: dict[str, Any] = {}
    for _ in range(n_kv):
        key = string()
        meta[key] = value(take(u32))
    end, known = 0, True
    for _ in range(n_tensors):
        string()
        n_dims = take(u32)
        elements = 1
        for _ in range(n_dims):
            elements *= take(u64)
        ggml_type, offset = take(u32), take(u64)
        block, nbytes = _GGML_SIZES.get(ggml_type, (0, 0))
        known = known and block > 0
        end = max(end, offset + (elements // block * nbytes if block else 0))
    align = int(meta.get("general.alignment", 32)) or 32
    data_offset = -(-pos // align) * align
    return GGUFHeader(version, n_tensors, meta, data_offset, data_offset + end if known else -1, size)


def check_gguf(path: Path, *, need_weights: bool) -> None:
    header = read_gguf_header(path)
    if need_weights and header.tensor_count == 0:
        raise ModelCorruptError(f"{path}: GGUF file holds no tensors")
    if need_weights and header.expected_size > header.file_size:
        raise ModelCorruptError(
            f"{path}: GGUF file is truncated: tensor data needs "
            f"{header.expected_size} bytes, the file has {header.file_size}"
        )
