"""Weights travel as one array, not one per tensor.

Flower moves every Array of a message as separate objects, one HTTP request each and at every hop
(ServerApp -> SuperLink -> SuperNode -> ClientApp, and back): a CLA-HDM sub-model's ~270 tensors
cost about 20 ms apiece on a loaded 2-core machine, so most of a `tiny` round went on requests.
Packing concatenates the tensors' bytes into one uint8 Array (Flower still cuts it into 5 MB
chunks) with an index of names, dtypes and shapes beside it; the bytes are the same.

The server packs what it sends (server/prompt_grid.py) and unpacks replies; the ClientApp unpacks
what it receives and packs its reply when the request was packed (client/client_app.py's mod).
Everything else only ever sees ordinary ArrayRecords. An index arrives over the network, so it
is checked (known dtypes, shapes that add up to the buffer exactly) before anything is rebuilt.
"""
from __future__ import annotations

import json
import math

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from common.errors import ProtocolError
from common.messages import ARRAYS

INDEX = "arrays-index"  # the ConfigRecord describing the packed tensors
PACKED = "packed"  # the one Array in the packed ArrayRecord
# What model weights and their buffers can be: nothing else is rebuilt from a received index.
DTYPES = frozenset({"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"})
MAX_TENSORS = 100_000


def is_packed(content: RecordDict) -> bool:
    return INDEX in content.config_records


def packed(content: RecordDict) -> RecordDict:
    """`content` with its ArrayRecord packed (`content` itself if packed already or without one)."""
    if is_packed(content) or ARRAYS not in content.array_records:
        return content
    arrays = {name: array.numpy() for name, array in content.array_records[ARRAYS].items()}
    buffer = np.concatenate([a.reshape(-1).view(np.uint8) for a in map(np.ascontiguousarray, arrays.values())]) \
        if arrays else np.zeros(0, np.uint8)
    index = {"names": list(arrays), "dtypes": [str(a.dtype) for a in arrays.values()],
             "shapes": [list(a.shape) for a in arrays.values()]}
    out = RecordDict({key: record for key, record in content.items() if key != ARRAYS})
    out[ARRAYS] = ArrayRecord({PACKED: Array(buffer)})
    out[INDEX] = ConfigRecord({"index": json.dumps(index)})
    return out


def unpacked(content: RecordDict) -> RecordDict:
    """`content` with its ArrayRecord rebuilt from the packed form (`content` itself if not packed);
    ProtocolError if the index does not describe the buffer exactly."""
    if not is_packed(content):
        return content
    try:
        index = json.loads(str(content.config_records[INDEX]["index"]))
        names, dtypes, shapes = index["names"], index["dtypes"], index["shapes"]
        packed = content.array_records[ARRAYS]
        if list(packed) != [PACKED]:
            raise ProtocolError(f"a packed message holds one array {PACKED!r}, not {list(packed)[:3]}")
        buffer = packed[PACKED].numpy()
    except ProtocolError:
        raise
    except (KeyError, TypeError, ValueError) as err:
        raise ProtocolError(f"unreadable packed weights ({err})") from None
    _check_index(names, dtypes, shapes, buffer)
    arrays, start = {}, 0
    for name, dtype, shape in zip(names, dtypes, shapes):
        size = math.prod(shape) * np.dtype(dtype).itemsize
        arrays[name] = Array(buffer[start:start + size].view(dtype).reshape(shape).copy())
        start += size
    out = RecordDict({key: record for key, record in content.items() if key not in (ARRAYS, INDEX)})
    out[ARRAYS] = ArrayRecord(arrays)
    return out


def _check_index(names, dtypes, shapes, buffer: np.ndarray) -> None:
    if buffer.dtype != np.uint8 or buffer.ndim != 1:
        raise ProtocolError("packed weights must be one flat uint8 array")
    if not (isinstance(names, list) and isinstance(dtypes, list) and isinstance(shapes, list)):
        raise ProtocolError("the packed weights' index must list names, dtypes and shapes")
    if not len(names) == len(dtypes) == len(shapes) <= MAX_TENSORS:
        raise ProtocolError("the packed weights' index lists different numbers of names, dtypes and shapes")
    if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
        raise ProtocolError("the packed weights' names must be distinct, non-empty strings")
    total = 0
    for name, dtype, shape in zip(names, dtypes, shapes):
        if dtype not in DTYPES:
            raise ProtocolError(f"packed tensor {name!r}: dtype {dtype!r} is not one of model weights")
        if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                for d in shape)):
            raise ProtocolError(f"packed tensor {name!r}: shape {shape!r} is not a list of sizes")
        total += math.prod(shape) * np.dtype(dtype).itemsize
    if total != buffer.size:
        raise ProtocolError(f"the packed weights' index describes {total} bytes, the array holds {buffer.size}")
