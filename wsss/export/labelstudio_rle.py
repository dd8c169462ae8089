"""Label Studio's brush RLE: the bit-packed run-length format of ``brushlabels`` results (``value.rle``).

Label Studio stores a brush mask as an RGBA image of the original size, flattened to ``H * W * 4`` bytes (every
channel holding the same 0/255 value), and run-length encodes that byte array into a bit stream (our codec of the
format its front end and ``label-studio-converter``'s ``brush.py`` read and write; we do not depend on
``label-studio-sdk``, which pins a conflicting OpenCV):

- header: the number of values (32 bits), the word size minus 1 (5 bits; 8), four run-length field sizes minus 1
  (4 bits each; 3, 4, 8, 16);
- then blocks until every value is decoded: 1 bit "run" flag, 2 bits choosing a field size, ``size`` bits of
  ``count - 1``; a run is followed by one ``word``-bit value repeated ``count`` times, a non-run by ``count`` literal
  values;
- zero bits pad the stream to whole bytes; the result is a list of byte values (0..255).

The encoder writes every value as a run (a run of one is a 3-bit count of 0), which any decoder reads; runs
longer than 2^16 are split.
"""

from __future__ import annotations

import numpy as np

WORD = 8
SIZES = (3, 4, 8, 16)  # run-length field sizes
MAX_RUN = 1 << 16


def _runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start values and lengths of the runs of equal values in a 1-D array."""
    if values.size == 0:
        return values[:0], np.zeros(0, np.int64)
    change = np.flatnonzero(np.diff(values.astype(np.int16))) + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [values.size]]))
    return values[starts], lengths


def encode(mask: np.ndarray) -> list[int]:
    """A binary (H, W) mask (any non-zero = brushed) as Label Studio brush RLE bytes."""
    flat = np.repeat((np.asarray(mask) > 0).astype(np.uint8).ravel() * 255, 4)
    bits = [f"{flat.size:032b}", f"{WORD - 1:05b}", "".join(f"{s - 1:04b}" for s in SIZES)]
    for value, length in zip(*_runs(flat), strict=True):
        while length > 0:
            n = int(min(length, MAX_RUN))
            size_index = next(i for i, s in enumerate(SIZES) if n - 1 < (1 << s))
            bits.append(f"1{size_index:02b}{n - 1:0{SIZES[size_index]}b}{int(value):08b}")
            length -= n
    stream = "".join(bits)
    stream += "0" * (-len(stream) % 8)
    return np.packbits(np.frombuffer(stream.encode(), np.uint8) - ord("0")).tolist()


class _Bits:
    def __init__(self, data: bytes):
        self.bits = np.unpackbits(np.frombuffer(data, np.uint8))
        self.pos = 0

    def read(self, n: int) -> int:
        if self.pos + n > self.bits.size:
            raise ValueError("brush RLE stream ends early")
        chunk = self.bits[self.pos : self.pos + n]
        self.pos += n
        return int(chunk.dot(1 << np.arange(n - 1, -1, -1, dtype=np.int64))) if n else 0


def decode_values(rle: list[int] | bytes, expect: int | None = None) -> np.ndarray:
    """The flat uint8 value array of a brush RLE stream (``H * W * 4`` RGBA bytes). With ``expect``, a stream that
    declares another number of values is refused before anything of its size is allocated."""
    if not isinstance(rle, bytes):
        if not isinstance(rle, list) or any(
            not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 255 for v in rle
        ):
            raise ValueError("brush RLE values must be a list of bytes (0..255)")
        rle = bytes(rle)
    bits = _Bits(rle)
    total, word = bits.read(32), bits.read(5) + 1
    if expect is not None and total != expect:
        raise ValueError(f"brush RLE declares {total} values, its image needs {expect}")
    sizes = [bits.read(4) + 1 for _ in range(4)]
    out = np.zeros(total, np.uint8)
    i = 0
    while i < total:
        run = bits.read(1)
        j = i + 1 + bits.read(sizes[bits.read(2)])
        if j > total:
            raise ValueError(f"brush RLE run goes past the {total} values it declares")
        if run:
            out[i:j] = bits.read(word)
        else:
            for k in range(i, j):
                out[k] = bits.read(word)
        i = j
    return out


def decode(rle: list[int] | bytes, height: int, width: int) -> np.ndarray:
    """A brush RLE stream as a bool (H, W) mask (alpha channel > 0); its size must be ``height`` x ``width``."""
    values = decode_values(rle, height * width * 4)
    if values.size != height * width * 4:
        raise ValueError(f"brush RLE holds {values.size} values, {height}x{width} RGBA needs {height * width * 4}")
    return values.reshape(height, width, 4)[..., 3] > 0
