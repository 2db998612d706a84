"""The image cleaner on samples shaped like real phone and camera output (tests/support/samples.py).

A clean result must read back with no EXIF (not even an empty thumbnail directory), no XMP, IPTC,
ICC profile or comment, must not contain any identifying value byte for byte, and must still
show the same picture the tipster saw, orientation applied.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import time

import pytest
from PIL import ExifTags, Image, ImageChops, ImageStat, IptcImagePlugin
from pillow_heif import register_heif_opener

from tests.support import samples
from tipline.core import images

register_heif_opener()
MAX_PIXELS = 40_000_000


def png_chunks(data: bytes) -> list[bytes]:
    kinds, at = [], 8
    while at < len(data):
        length = struct.unpack(">I", data[at : at + 4])[0]
        kinds.append(data[at + 4 : at + 8])
        at += 12 + length
    return kinds


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    assert a.size == b.size
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
    return sum(ImageStat.Stat(diff).mean) / 3


SAMPLES = [
    *(samples.camera_jpeg(orientation) for orientation in range(1, 9)),
    samples.png_with_chunks(),
    samples.heic_with_location(),
    samples.webp_with_exif(),
    samples.animated_gif(),
]


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.name)
def test_the_original_carries_what_the_test_looks_for(sample: samples.Sample) -> None:
    # Guard against a vacuous test: every secret is really in the input, and Pillow sees the metadata.
    for secret in sample.secrets:
        assert secret in sample.data, secret
    with Image.open(io.BytesIO(sample.data)) as original:
        if sample.name != "animated-gif":
            assert original.getexif().get_ifd(ExifTags.IFD.GPSInfo), "no GPS in the sample"
            assert original.getexif()[ExifTags.Base.Make] == samples.MAKE
        if sample.name.startswith("camera-jpeg"):
            assert original.getexif().get_ifd(ExifTags.IFD.IFD1), "no thumbnail directory in the sample"
            assert IptcImagePlugin.getiptcinfo(original)[(2, 80)] == samples.IPTC_BYLINE
            assert "xmp" in original.info
            assert "icc_profile" in original.info


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.name)
def test_a_cleaned_image_keeps_pixels_and_nothing_else(sample: samples.Sample) -> None:
    image = images.clean(sample.data, MAX_PIXELS)

    for secret in sample.secrets:
        assert secret not in image.data, f"{secret!r} survived cleaning"
    with Image.open(io.BytesIO(image.data)) as cleaned:
        assert cleaned.format == ("PNG" if image.content_type == "image/png" else "JPEG")
        exif = cleaned.getexif()
        assert dict(exif) == {}
        assert exif.get_ifd(ExifTags.IFD.GPSInfo) == {}
        assert exif.get_ifd(ExifTags.IFD.IFD1) == {}
        for key in ("exif", "xmp", "icc_profile", "comment", "photoshop", "adobe", "mp"):
            assert key not in cleaned.info, key
        if cleaned.format == "JPEG":
            assert [marker for marker, _ in cleaned.applist] == ["APP0"]  # JFIF only
            assert IptcImagePlugin.getiptcinfo(cleaned) is None
        else:
            assert set(png_chunks(image.data)) <= {b"IHDR", b"IDAT", b"IEND"}
        assert sample.upright is not None
        assert (image.width, image.height) == cleaned.size == sample.upright.size
        assert mean_difference(cleaned, sample.upright) < 6, "the picture changed beyond re-encoding noise"


def test_orientation_is_applied_to_the_pixels_not_kept_as_a_tag() -> None:
    sample = samples.camera_jpeg(6)
    image = images.clean(sample.data, MAX_PIXELS)
    assert (image.width, image.height) == (64, 96)  # stored 96 x 64, shown upright
    with Image.open(io.BytesIO(image.data)) as cleaned:
        # The red quadrant the camera recorded top-left is top-right once the photo is upright.
        assert cleaned.convert("RGB").getpixel((40, 40))[0] > 180
        assert cleaned.convert("RGB").getpixel((3, 5))[0] < 100


def test_animated_gif_keeps_its_first_frame_and_says_how_many_there_were() -> None:
    image = images.clean(samples.animated_gif().data, MAX_PIXELS)
    assert (image.frames, image.source_format) == (3, "GIF")
    with Image.open(io.BytesIO(image.data)) as cleaned:
        assert getattr(cleaned, "n_frames", 1) == 1


def test_transparency_survives_for_png() -> None:
    im = samples.scene(mode="RGBA")
    im.putpixel((0, 0), (0, 0, 0, 0))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    image = images.clean(buf.getvalue(), MAX_PIXELS)
    with Image.open(io.BytesIO(image.data)) as cleaned:
        assert cleaned.mode == "RGBA"
        assert cleaned.getpixel((0, 0))[3] == 0


@pytest.mark.parametrize("bomb", [samples.png_bomb(), samples.jpeg_bomb()], ids=["png", "jpeg"])
def test_decompression_bombs_are_refused_from_their_header(bomb: bytes) -> None:
    assert len(bomb) < 2000  # tiny on the wire, gigapixels once decoded
    with pytest.raises(images.Refused) as refused:
        images.clean(bomb, MAX_PIXELS)
    assert refused.value.reason == images.PIXELS


def test_the_pixel_limit_is_a_setting() -> None:
    data = samples.camera_jpeg(1, (200, 200)).data
    with pytest.raises(images.Refused) as refused:
        images.clean(data, 39_999)
    assert refused.value.reason == images.PIXELS
    assert images.clean(data, 40_000).width == 200


@pytest.mark.parametrize("kind", sorted(samples.NOT_IMAGES))
def test_files_that_are_not_images_are_refused_whatever_they_claim(kind: str) -> None:
    with pytest.raises(images.Refused) as refused:
        images.clean(samples.NOT_IMAGES[kind], MAX_PIXELS)
    assert refused.value.reason == images.TYPE


def test_an_image_that_cannot_be_decoded_is_refused_not_crashed_on() -> None:
    for isolate in (True, False):
        with pytest.raises(images.Refused) as refused:
            images.clean(samples.truncated_jpeg(), MAX_PIXELS, isolate=isolate)
        assert refused.value.reason == images.UNREADABLE


def test_the_isolated_child_gives_the_same_result_as_cleaning_in_process() -> None:
    data = samples.camera_jpeg(3).data
    assert images.clean(data, MAX_PIXELS, isolate=True) == images.clean(data, MAX_PIXELS, isolate=False)


def test_the_child_cleans_below_the_priority_of_the_service() -> None:
    # A photo takes a core for about a second: webhooks answered meanwhile must come first
    command = images.child_command(MAX_PIXELS)
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=images.child_environment())
    try:
        ours = os.getpriority(os.PRIO_PROCESS, 0)
        for _ in range(600):  # it lowers its priority before it reads the image
            if os.getpriority(os.PRIO_PROCESS, child.pid) != ours:
                break
            time.sleep(0.05)
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == min(19, ours + images.CHILD_NICENESS)
        out, _ = child.communicate(samples.camera_jpeg(3).data, timeout=60)
    finally:
        child.kill()
    assert out.startswith(b'{"content_type": "image/jpeg"')


def test_sniffing_reads_content_not_names() -> None:
    assert images.sniff(samples.heic_with_location().data) == "HEIF"
    assert images.sniff(samples.webp_with_exif().data) == "WEBP"
    assert images.sniff(samples.NOT_IMAGES["mp4"]) is None


def test_the_child_sees_no_secret_of_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    parent = {
        "TIPLINE_MASTER_KEY": "c2VjcmV0",
        "TWILIO_AUTH_TOKEN": "tok",
        "TELEGRAM_BOT_TOKEN": "1:abc",
        "TIPLINE_DATABASE_URL": "postgresql+psycopg://u:pw@db/tips",
        "HOME": "/home/service-account",
    }
    for name, value in parent.items():
        monkeypatch.setenv(name, value)
    child = images.child_environment()
    assert set(child) == {"PATH", "LC_ALL", "PYTHONPATH"}
    assert not any(value in " ".join(child.values()) for value in parent.values())
