"""A dependency-free example model: paints a colour gradient into a PNG.

It exists so that `cogkit predict` can be tried offline on any machine in a second.
"""

import struct
import tempfile
import zlib

from cog import BasePredictor, Input, Path


def _png_bytes(width: int, height: int, pixel) -> bytes:
    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter type "none" for each scanline
        for x in range(width):
            rows.extend(pixel(x, y))

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(rows), 6)) + chunk(b"IEND", b"")


def _rgb(hex_colour: str) -> tuple:
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))


class Predictor(BasePredictor):
    def predict(
        self,
        start: str = Input(description="Colour at the left edge", default="#1e3c72", regex="^#[0-9a-fA-F]{6}$"),
        end: str = Input(description="Colour at the right edge", default="#f7797d", regex="^#[0-9a-fA-F]{6}$"),
        width: int = Input(description="Image width in pixels", default=256, ge=1, le=2048),
        height: int = Input(description="Image height in pixels", default=128, ge=1, le=2048),
    ) -> Path:
        a, b = _rgb(start), _rgb(end)
        span = max(width - 1, 1)

        def pixel(x: int, y: int) -> tuple:
            t = x / span
            return tuple(round(a[i] + (b[i] - a[i]) * t) for i in range(3))

        out = Path(tempfile.mkdtemp()) / "gradient.png"
        out.write_bytes(_png_bytes(width, height, pixel))
        print(f"painted {width}x{height} from {start} to {end}")
        return out
