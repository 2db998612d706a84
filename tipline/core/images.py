"""Photos from tipsters: decide what a file is from its bytes, refuse what we cannot clean, and
re-encode what we can from pixels alone.

A cleaned image is a new image: its pixels (after applying the photo's orientation) and nothing
else. EXIF with its GPS position, camera make, model and serial, owner and dates; XMP; IPTC;
ICC profiles; comments; maker notes; embedded thumbnails and extra frames are not carried over,
because nothing of the original but pixel values is ever handed to the encoder.

Decoding untrusted images is the riskiest thing the tip line does, so by default it happens in a
short-lived child process (`python -m tipline.core.images`) that may not write files, dump core, use more
than `CHILD_MEMORY` bytes or `CHILD_CPU_SECONDS` of CPU, runs below the service's CPU priority (webhooks
come first), and whose environment holds no secret (no master key, no provider token). The original
bytes reach it through a pipe and never touch the disk. A decoder that crashes or runs away costs
one child, not the tip line.

Supported: JPEG, PNG, WebP, GIF and HEIC/HEIF. Animated GIFs and WebPs keep their first frame only.
PNG and GIF become PNG (lossless, transparency kept: screenshots stay legible); the others become
JPEG at quality 90.
"""

from __future__ import annotations

import io
import json
import os
import resource
import signal
import subprocess
import sys
import warnings
from dataclasses import dataclass

SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "HEIF")
CHILD_MEMORY = 1536 * 2**20
CHILD_CPU_SECONDS = 30
CHILD_TIMEOUT = 60.0
# How much lower the child's CPU priority is than the service's: cleaning a 12-megapixel photo takes
# a core for about a second, and a tipster's webhook must not wait for it.
CHILD_NICENESS = 10
JPEG_QUALITY = 90

# Why a file was refused. Each has a kind reply in the catalog ("media_refused_<reason>").
TYPE = "type"  # not an image we accept (video, PDF, audio, archive, or not what it claims)
SIZE = "size"  # larger than TIPLINE_MEDIA_MAX_BYTES
PIXELS = "pixels"  # more pixels than TIPLINE_MEDIA_MAX_PIXELS: possibly a decompression bomb
UNREADABLE = "unreadable"  # claims to be a supported image but cannot be decoded
REASONS = (TYPE, SIZE, PIXELS, UNREADABLE)


class Refused(Exception):
    """The file is not stored. `reason` is one of REASONS, safe to store and log."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Interrupted(Exception):
    """The cleaner was stopped from outside (the service stopping, the OOM killer), not by the image:
    the photo is not judged, and is cleaned again later."""


# Signals that stop a child from outside. Its own limits kill it otherwise: the CPU limit by
# SIGXCPU (its hard limit, which would send SIGKILL, is set above the soft one), the memory limit
# by a failed allocation (MemoryError, or SIGSEGV/SIGABRT in a decoder), and never by these.
_STOPPED_FROM_OUTSIDE = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGKILL})


@dataclass(frozen=True)
class CleanImage:
    data: bytes
    content_type: str  # image/jpeg or image/png
    width: int
    height: int
    source_format: str  # what the bytes were (JPEG, PNG, WEBP, GIF, HEIF), whatever was declared
    frames: int  # frames in the original; only the first is kept


# Magic numbers of what tipsters commonly send, to tell "this is a video" from "this is broken".
_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
)
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif"}


def sniff(data: bytes) -> str | None:
    """The image format the bytes start with, or None: the declared type is never trusted."""
    for magic, name in _SIGNATURES:
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return "HEIF"
    return None


def clean(data: bytes, max_pixels: int, *, isolate: bool = True) -> CleanImage:
    """Clean one image (see the module docstring); raises Refused for anything else."""
    if sniff(data) is None:
        raise Refused(TYPE)  # not even the start of an image we accept: no decoder sees it
    if not isolate:
        return _clean_here(data, max_pixels)
    return _clean_in_child(data, max_pixels)


def child_environment() -> dict[str, str]:
    """What the cleaner child may see of the environment: where to find Python code, nothing else.

    Settings such as TIPLINE_MASTER_KEY or TWILIO_AUTH_TOKEN may live in the service's environment;
    a decoder exploited by a crafted image must not find them in its own.
    """
    return {"PATH": os.defpath, "LC_ALL": "C.UTF-8", "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)}


def child_command(max_pixels: int) -> list[str]:
    """The cleaner child's command line: it reads the image from stdin, writes the result to stdout."""
    return [sys.executable, "-B", "-m", "tipline.core.images", str(max_pixels)]


def _clean_in_child(data: bytes, max_pixels: int) -> CleanImage:
    try:
        done = subprocess.run(
            child_command(max_pixels),
            input=data,
            capture_output=True,
            timeout=CHILD_TIMEOUT,
            check=False,
            env=child_environment(),
            cwd="/",
            # Its own session: a signal to the service's process group (Ctrl-C, `kill -- -PGID`)
            # stops the service gracefully, and lets the child finish the photo under way.
            start_new_session=True,
        )
    except subprocess.TimeoutExpired:
        raise Refused(UNREADABLE) from None
    if done.returncode < 0 and -done.returncode in _STOPPED_FROM_OUTSIDE:
        raise Interrupted(signal.Signals(-done.returncode).name)  # e.g. systemd stopping the whole cgroup
    if done.returncode != 0:
        raise Refused(UNREADABLE)  # killed by a limit, or crashed in a decoder
    header, _, body = done.stdout.partition(b"\n")
    try:
        meta = json.loads(header)
    except ValueError:
        raise Refused(UNREADABLE) from None
    if "refused" in meta:
        raise Refused(meta["refused"] if meta["refused"] in REASONS else UNREADABLE)
    if len(body) != meta["length"]:
        raise Refused(UNREADABLE)
    return CleanImage(body, meta["content_type"], meta["width"], meta["height"], meta["source_format"], meta["frames"])


def _clean_here(data: bytes, max_pixels: int) -> CleanImage:
    from PIL import Image, ImageOps, UnidentifiedImageError
    from pillow_heif import register_heif_opener

    register_heif_opener()
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb guard warns at 89 MP; ours is stricter, and a warning is a refusal.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=list(SUPPORTED_FORMATS)) as original:
                source_format = "HEIF" if original.format in ("HEIF", "HEIC", "AVIF") else str(original.format)
                width, height = original.size
                if width * height > max_pixels:
                    raise Refused(PIXELS)  # refused from the header: never decoded
                frames = int(getattr(original, "n_frames", 1) or 1)
                original.seek(0)
                original.load()
                try:
                    upright = ImageOps.exif_transpose(original)
                except Exception:  # noqa: BLE001 - unreadable EXIF: keep the pixels as stored
                    upright = original.copy()
                keep_png = source_format in ("PNG", "GIF")
                alpha = upright.mode in ("RGBA", "LA", "PA") or "transparency" in upright.info
                mode = "RGBA" if keep_png and alpha else "RGB"
                pixels = upright.convert(mode)
                # A new image from raw pixel values: no .info, no EXIF, no ICC, nothing else.
                fresh = Image.frombytes(mode, pixels.size, pixels.tobytes())
    except Refused:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise Refused(PIXELS) from None
    except UnidentifiedImageError:
        raise Refused(TYPE) from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError, IndexError, KeyError, TypeError):
        raise Refused(UNREADABLE) from None
    out = io.BytesIO()
    if keep_png:
        fresh.save(out, "PNG", optimize=False)
        content_type = "image/png"
    else:
        fresh.save(out, "JPEG", quality=JPEG_QUALITY)
        content_type = "image/jpeg"
    return CleanImage(out.getvalue(), content_type, fresh.width, fresh.height, source_format, frames)


def _limit_child() -> None:
    """The child's cage: no core dump (it would hold the original), no files, bounded memory and CPU,
    and a lower CPU priority than the service's."""
    os.nice(CHILD_NICENESS)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write to a file fails instead of killing us
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))
    # SIGXCPU at the soft limit (its default action ends the child); SIGKILL at the hard one is kept
    # for signals from outside (_STOPPED_FROM_OUTSIDE), so the two are told apart.
    resource.setrlimit(resource.RLIMIT_CPU, (CHILD_CPU_SECONDS, CHILD_CPU_SECONDS + 5))


def _child_main(argv: list[str]) -> int:
    _limit_child()
    max_pixels = int(argv[0])
    data = sys.stdin.buffer.read()
    out = sys.stdout.buffer
    try:
        image = _clean_here(data, max_pixels)
    except Refused as refused:
        out.write(json.dumps({"refused": refused.reason}).encode() + b"\n")
        return 0
    meta = {
        "content_type": image.content_type,
        "width": image.width,
        "height": image.height,
        "source_format": image.source_format,
        "frames": image.frames,
        "length": len(image.data),
    }
    out.write(json.dumps(meta).encode() + b"\n")
    out.write(image.data)
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
