"""What bytes are, from their magic numbers.

Clients send audio and video through `image_url` (the seed documents exactly that), so the type
always comes from the bytes' magic numbers; a declared type is only the fallback.
"""
from __future__ import annotations

OCTET_STREAM = "application/octet-stream"
# Enough decoded bytes for every signature below, including ftyp compatible-brand lists.
SNIFF_BYTES = 512


# ISO base media (ftyp) brands. Gemini spells QuickTime "video/mov" and 3GP "video/3gpp".
_FTYP_BRANDS: dict[bytes, str] = {
    **dict.fromkeys((b"avif", b"avis"), "image/avif"),
    **dict.fromkeys((b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx"), "image/heic"),
    **dict.fromkeys((b"mif1", b"msf1"), "image/heif"),
    **dict.fromkeys((b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "), "audio/mp4"),
    b"qt  ": "video/mov",
    **dict.fromkeys((b"3gp4", b"3gp5", b"3gp6", b"3gp7", b"3gs7", b"3ge6", b"3ge7", b"3gg6"), "video/3gpp"),
    **dict.fromkeys((b"3g2a", b"3g2b", b"3g2c"), "video/3gpp2"),
    **dict.fromkeys(
        (b"isom", b"iso2", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42", b"avc1", b"dash", b"M4V ", b"M4VH", b"M4VP", b"MSNV", b"NDAS", b"f4v ", b"mmp4"),
        "video/mp4",
    ),
}


def _ftyp(head: bytes) -> str | None:
    size = int.from_bytes(head[:4], "big")
    major = head[8:12]
    if major in _FTYP_BRANDS:
        return _FTYP_BRANDS[major]
    # Unknown major brand: the compatible brands usually name a family we know.
    end = min(len(head), size if 16 <= size <= len(head) else len(head))
    for off in range(16, end - 3, 4):
        brand = head[off:off + 4]
        if brand in _FTYP_BRANDS:
            return _FTYP_BRANDS[brand]
    return "video/mp4"


def _mpeg_audio(head: bytes) -> str | None:
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return None
    layer = (head[1] >> 1) & 0x03
    if layer == 0:
        # ADTS: sync, then layer bits 00 (AAC carries no layer).
        return "audio/aac" if head[1] & 0xF6 == 0xF0 else None
    version = (head[1] >> 3) & 0x03
    bitrate = head[2] >> 4
    rate = (head[2] >> 2) & 0x03
    if version == 1 or bitrate == 0x0F or rate == 0x03:  # reserved values: not a frame header
        return None
    return "audio/mp3" if layer == 1 else "audio/mpeg"


def sniff_mime(head: bytes) -> str | None:
    """The media type of a file from its first bytes, or None when unknown."""
    if len(head) < 4:
        return None
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head[:4] == b"RIFF" and len(head) >= 12:
        kind = head[8:12]
        if kind == b"WEBP":
            return "image/webp"
        if kind == b"WAVE":
            return "audio/wav"
        if kind == b"AVI ":
            return "video/avi"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "audio/aiff"
    if head[4:8] == b"ftyp" and len(head) >= 12:
        return _ftyp(head)
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        # EBML: the DocType element near the start says webm or matroska.
        return "video/webm" if b"webm" in head[:64] else "video/x-matroska"
    if head.startswith(b"OggS"):
        return "video/ogg" if b"\x80theora" in head else "audio/ogg"
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head.startswith(b"ID3"):
        return "audio/mp3"
    if head.startswith(b"FLV\x01"):
        return "video/x-flv"
    if head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return "video/wmv"  # ASF container
    if head[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3"):
        return "video/mpeg"  # MPEG program stream / elementary video sequence header
    if len(head) > 376 and head[0] == 0x47 and head[188] == 0x47 and head[376] == 0x47:
        return "video/mp2t"
    if head[:2] == b"BM" and len(head) >= 14 and head[6:10] == b"\x00\x00\x00\x00":
        return "image/bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    return _mpeg_audio(head)
