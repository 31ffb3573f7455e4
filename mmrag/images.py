"""Safe image decoding shared by the vision embedder and image queries."""

from __future__ import annotations

import io

from PIL import Image, ImageOps, UnidentifiedImageError

from mmrag.errors import PermanentError

MAX_PIXELS = 64_000_000  # decompression-bomb limit: larger images are refused, not decoded


def decode_image(data: bytes, subject: str, stage: str) -> Image.Image:
    """RGB image with EXIF orientation applied; corrupt, truncated or oversized images raise PermanentError."""
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return ImageOps.exif_transpose(img).convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise PermanentError(
            stage, subject, f"cannot decode image ({type(exc).__name__}: {exc})", "re-upload a valid PNG/JPEG/WebP/GIF"
        ) from exc
