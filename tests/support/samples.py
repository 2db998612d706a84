"""Test photos that carry what real phones and cameras put in them, generated here (no licences,
no real person's data). Each sample lists the byte strings that must not survive cleaning.

The identifying values are made up but shaped like the real thing: a GPS position in EXIF
rationals and in XMP text, camera make, model and body serial, owner and artist names, capture
dates, a maker note, a comment, an embedded EXIF thumbnail, an IPTC by-line and city, and an ICC
profile with an owner's name in it.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

from PIL import ExifTags, Image, ImageCms, ImageDraw
from PIL.PngImagePlugin import PngInfo

MAKE = "AcmeOptics"
MODEL = "AcmeOptics Q7 Tipcam"
SERIAL = "SN-4417-99817723"
OWNER = "Dana Q. Witness"
TAKEN = "2026:11:20 22:14:05"
COMMENT = b"shot from my window at 14 Elm Row"
MAKER_NOTE = b"ACME-MAKERNOTE-LENS-2291-UNIT-77"
THUMB_MARK = b"EMBEDDED-THUMBNAIL-MARK"
LATITUDE = ((40, 1), (26, 1), (4910, 100))  # 40 deg 26' 49.10" N
LONGITUDE = ((3, 1), (43, 1), (2911, 100))  # 3 deg 43' 29.11" W
XMP_GPS = "40,26.8183N"
XMP = (
    '<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
    '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
    'xmlns:exif="http://ns.adobe.com/exif/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/" '
    f'exif:GPSLatitude="{XMP_GPS}" exif:GPSLongitude="3,43.4852W"><dc:creator>{OWNER}</dc:creator>'
    '</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
)
IPTC_BYLINE = b"Dana Witness (IPTC)"
IPTC_CITY = b"Springfield-Northside"
ICC_OWNER = b"ICC profile of Dana Witness's laptop"


@dataclass(frozen=True)
class Sample:
    name: str
    data: bytes
    secrets: tuple[bytes, ...]  # none of these may appear in the cleaned bytes
    upright: Image.Image | None = None  # what the picture looks like, orientation applied


def scene(width: int = 96, height: int = 64, mode: str = "RGB") -> Image.Image:
    """A picture whose orientation is obvious: four coloured quadrants and a diagonal bar."""
    im = Image.new(mode, (width, height), (255, 255, 255, 255) if mode == "RGBA" else "white")
    draw = ImageDraw.Draw(im)
    w, h = width // 2, height // 2
    draw.rectangle((0, 0, w - 1, h - 1), fill=(220, 30, 30))
    draw.rectangle((w, 0, width - 1, h - 1), fill=(30, 160, 40))
    draw.rectangle((0, h, w - 1, height - 1), fill=(30, 60, 200))
    draw.rectangle((w, h, width - 1, height - 1), fill=(240, 200, 20))
    draw.line((0, 0, width // 3, height - 1), fill=(0, 0, 0), width=5)
    return im


def camera_exif(orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = MAKE
    exif[ExifTags.Base.Model] = MODEL
    exif[ExifTags.Base.Artist] = OWNER
    exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.Base.DateTime] = TAKEN
    details = exif.get_ifd(ExifTags.IFD.Exif)
    details[ExifTags.Base.BodySerialNumber] = SERIAL
    details[ExifTags.Base.CameraOwnerName] = OWNER
    details[ExifTags.Base.DateTimeOriginal] = TAKEN
    details[ExifTags.Base.MakerNote] = MAKER_NOTE
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = tuple(n / d for n, d in LATITUDE)
    gps[ExifTags.GPS.GPSLongitudeRef] = "W"
    gps[ExifTags.GPS.GPSLongitude] = tuple(n / d for n, d in LONGITUDE)
    return exif


def gps_needles(exif_bytes: bytes) -> tuple[bytes, ...]:
    """The GPS coordinates exactly as the EXIF block stores them (TIFF rationals, either byte order)."""
    needles = []
    for order in ("<", ">"):
        for coordinate in (LATITUDE, LONGITUDE):
            packed = b"".join(struct.pack(order + "II", n, d) for n, d in coordinate)
            if packed in exif_bytes:
                needles.append(packed)
    assert needles, "the sample's EXIF does not hold the GPS rationals it should"
    return tuple(needles)


def with_thumbnail(exif_bytes: bytes) -> bytes:
    """Add IFD1 with an embedded JPEG thumbnail (Pillow writes IFD0 only), as cameras do."""
    assert exif_bytes.startswith(b"Exif\x00\x00")
    tiff = bytearray(exif_bytes[6:])
    order = "<" if tiff[:2] == b"II" else ">"
    ifd0 = struct.unpack(order + "I", tiff[4:8])[0]
    count = struct.unpack(order + "H", tiff[ifd0 : ifd0 + 2])[0]
    next_at = ifd0 + 2 + 12 * count
    thumb_buf = io.BytesIO()
    scene(32, 24).save(thumb_buf, "JPEG", comment=THUMB_MARK)
    thumb = thumb_buf.getvalue()
    if len(tiff) % 2:
        tiff += b"\x00"
    ifd1 = len(tiff)
    data_at = ifd1 + 2 + 2 * 12 + 4
    tiff[next_at : next_at + 4] = struct.pack(order + "I", ifd1)
    tiff += struct.pack(order + "H", 2)
    tiff += struct.pack(order + "HHII", 0x0201, 4, 1, data_at)
    tiff += struct.pack(order + "HHII", 0x0202, 4, 1, len(thumb))
    tiff += struct.pack(order + "I", 0)
    tiff += thumb
    return b"Exif\x00\x00" + bytes(tiff)


def app_segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def iptc_segment() -> bytes:
    """A Photoshop APP13 block with IPTC by-line (2:80), city (2:90) and caption (2:120)."""
    records = b"".join(
        struct.pack(">BBBH", 0x1C, 2, dataset, len(value)) + value
        for dataset, value in ((80, IPTC_BYLINE), (90, IPTC_CITY), (120, b"Caption: " + COMMENT))
    )
    if len(records) % 2:
        records += b"\x00"
    resource = b"8BIM" + struct.pack(">H", 0x0404) + b"\x00\x00" + struct.pack(">I", len(records)) + records
    return app_segment(0xED, b"Photoshop 3.0\x00" + resource)


def icc_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes() + ICC_OWNER


def insert_after_soi(jpeg: bytes, segment: bytes) -> bytes:
    assert jpeg[:2] == b"\xff\xd8"
    return jpeg[:2] + segment + jpeg[2:]


def camera_jpeg(orientation: int = 1, size: tuple[int, int] = (96, 64)) -> Sample:
    """A phone photo as it leaves the camera: EXIF with GPS, serial, owner, maker note and a
    thumbnail, an XMP packet, an IPTC block, an ICC profile and a comment."""
    exif_bytes = with_thumbnail(camera_exif(orientation).tobytes())
    buf = io.BytesIO()
    picture = scene(*size)
    picture.save(buf, "JPEG", quality=95, exif=exif_bytes, comment=COMMENT, xmp=XMP.encode(), icc_profile=icc_profile())
    data = insert_after_soi(buf.getvalue(), iptc_segment())
    upright = _transposed(picture, orientation)
    secrets = (
        MAKE.encode(),
        MODEL.encode(),
        SERIAL.encode(),
        OWNER.encode(),
        TAKEN.encode(),
        COMMENT,
        MAKER_NOTE,
        THUMB_MARK,
        XMP_GPS.encode(),
        IPTC_BYLINE,
        IPTC_CITY,
        ICC_OWNER,
        b"Exif\x00\x00",
        b"http://ns.adobe.com/xap",
        b"Photoshop 3.0",
        b"ICC_PROFILE",
        *gps_needles(exif_bytes),
    )
    return Sample(f"camera-jpeg-orientation-{orientation}", data, secrets, upright)


def _transposed(picture: Image.Image, orientation: int) -> Image.Image:
    method = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }.get(orientation)
    return picture.transpose(method) if method is not None else picture.copy()


def png_with_chunks() -> Sample:
    """A PNG with an eXIf chunk (GPS, make, serial), tEXt/zTXt/iTXt chunks and an XMP iTXt."""
    exif = camera_exif(1)
    info = PngInfo()
    info.add_text("Author", OWNER)
    info.add_text("Comment", COMMENT.decode())
    info.add_text("Location", "near " + XMP_GPS, zip=True)
    info.add_itxt("XML:com.adobe.xmp", XMP)
    buf = io.BytesIO()
    picture = scene(mode="RGBA")
    picture.save(buf, "PNG", exif=exif.tobytes(), pnginfo=info, icc_profile=icc_profile())
    secrets = (
        MAKE.encode(),
        MODEL.encode(),
        SERIAL.encode(),
        OWNER.encode(),
        COMMENT,
        XMP_GPS.encode(),
        MAKER_NOTE,
        b"eXIf",
        b"tEXt",
        b"zTXt",
        b"iTXt",
        b"iCCP",
        *gps_needles(exif.tobytes()),
    )
    return Sample("png-exif-text-chunks", buf.getvalue(), secrets, picture)


def heic_with_location() -> Sample:
    """An iPhone-style HEIC with GPS, make, model and serial in EXIF, and an XMP packet."""
    from pillow_heif import from_pillow

    exif = camera_exif(1)
    picture = scene(128, 96)
    heif = from_pillow(picture)
    buf = io.BytesIO()
    heif.save(buf, quality=95, exif=exif.tobytes(), xmp=XMP.encode())
    secrets = (
        MAKE.encode(),
        MODEL.encode(),
        SERIAL.encode(),
        OWNER.encode(),
        XMP_GPS.encode(),
        *gps_needles(exif.tobytes()),
    )
    return Sample("heic-with-location", buf.getvalue(), secrets, picture)


def webp_with_exif() -> Sample:
    exif = camera_exif(1)
    picture = scene()
    buf = io.BytesIO()
    picture.save(buf, "WEBP", quality=95, exif=exif.tobytes(), xmp=XMP.encode())
    secrets = (
        MAKE.encode(),
        MODEL.encode(),
        SERIAL.encode(),
        OWNER.encode(),
        XMP_GPS.encode(),
        *gps_needles(exif.tobytes()),
    )
    return Sample("webp-with-exif", buf.getvalue(), secrets, picture)


def animated_gif() -> Sample:
    """Three frames and a comment extension; the first frame is kept."""
    frames = [
        scene().convert("P"),
        Image.new("RGB", (96, 64), "black").convert("P"),
        Image.new("RGB", (96, 64), "white").convert("P"),
    ]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, comment=COMMENT)
    return Sample("animated-gif", buf.getvalue(), (COMMENT,), frames[0].convert("RGB"))


def png_bomb(width: int = 60_000, height: int = 60_000) -> bytes:
    """A tiny PNG whose header claims 3.6 gigapixels: it must be refused from the header, never decoded."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 4096)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def jpeg_bomb() -> bytes:
    """A small JPEG whose frame header is rewritten to claim 65000 x 65000 pixels."""
    buf = io.BytesIO()
    scene(16, 16).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 65000, 65000)
    return bytes(data)


NOT_IMAGES = {
    "pdf": b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n",
    "mp4": b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00" * 64,
    "zip": b"PK\x03\x04" + b"\x00" * 60,
    "text": b"this is not a picture at all, though it was sent as image/jpeg",
}


def truncated_jpeg() -> bytes:
    """Starts like a JPEG, then stops: a supported type that cannot be decoded."""
    return camera_jpeg().data[:300]


def jpeg_bytes(size: tuple[int, int] = (96, 64)) -> bytes:
    """A plain camera JPEG for end-to-end tests."""
    return camera_jpeg(6, size).data
