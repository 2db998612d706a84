"""How much photo cleaning costs, and what isolating the decoder in a child process adds.

Cleans a 12-megapixel phone-style JPEG (with EXIF, GPS, XMP, IPTC and a thumbnail) and a HEIC of
the same picture, each several times in this process (the baseline: decode, orient, re-encode) and
through the isolated child the media worker uses, and prints the times and their ratio.

    python bench/images.py [--runs 5] [--megapixels 12]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image, ImageFilter  # noqa: E402

from tests.support import samples  # noqa: E402
from tipline.core import images  # noqa: E402


def photo(megapixels: float) -> Image.Image:
    """A picture with a photo's texture (smooth areas, edges, grain), not a flat colour."""
    width = int((megapixels * 1e6 * 4 / 3) ** 0.5)
    height = int(width * 3 / 4)
    base = samples.scene(160, 120).resize((width, height), Image.Resampling.BICUBIC)
    grain = Image.effect_noise((width, height), 24).convert("RGB").filter(ImageFilter.GaussianBlur(1))
    return Image.blend(base, grain, 0.15)


def encode(picture: Image.Image, kind: str) -> bytes:
    exif = samples.with_thumbnail(samples.camera_exif(6).tobytes())
    buf = io.BytesIO()
    if kind == "JPEG":
        picture.save(buf, "JPEG", quality=92, exif=exif, xmp=samples.XMP.encode())
        return samples.insert_after_soi(buf.getvalue(), samples.iptc_segment())
    from pillow_heif import from_pillow

    from_pillow(picture).save(buf, quality=80, exif=exif)
    return buf.getvalue()


def timed(data: bytes, isolate: bool, runs: int) -> tuple[float, images.CleanImage]:
    times, image = [], None
    for _ in range(runs):
        start = time.perf_counter()
        image = images.clean(data, 50_000_000, isolate=isolate)
        times.append(time.perf_counter() - start)
    assert image is not None
    return statistics.median(times), image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--megapixels", type=float, default=12.0)
    args = parser.parse_args()
    picture = photo(args.megapixels)
    print(
        f"picture: {picture.width}x{picture.height} ({picture.width * picture.height / 1e6:.1f} MP), "
        f"median of {args.runs} runs"
    )
    for kind in ("JPEG", "HEIF"):
        data = encode(picture, kind)
        here, clean = timed(data, isolate=False, runs=args.runs)
        child, isolated = timed(data, isolate=True, runs=args.runs)
        assert clean.data == isolated.data
        print(
            f"{kind:5} {len(data) / 1e6:5.2f} MB in -> {len(clean.data) / 1e6:5.2f} MB out | "
            f"in process {here * 1000:7.1f} ms | isolated child {child * 1000:7.1f} ms | "
            f"ratio {child / here:4.2f} | {1 / child:5.2f} photos/s per core"
        )


if __name__ == "__main__":
    main()
