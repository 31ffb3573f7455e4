"""Safe image decoding shared by the vision embedder, OCR and image queries, and what counts as a blank image."""

from __future__ import annotations

import io

from PIL import Image, ImageOps, UnidentifiedImageError

from mmrag.errors import PermanentError
from mmrag.svg import looks_like_svg, rasterize_svg

MAX_PIXELS = 64_000_000  # decompression-bomb limit: larger images are refused, not decoded
Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow's own check, for callers that open images elsewhere


def decode_image(
    data: bytes, subject: str, stage: str, min_side: int = 0, fix: str = "re-upload a valid PNG/JPEG/WebP/GIF/SVG"
) -> Image.Image:
    """An RGB image: EXIF orientation applied, first frame of animations, alpha flattened onto white, 16-bit and
    palette/CMYK converted. With ``min_side`` a large JPEG decodes in draft mode at the smallest scale that keeps
    both sides >= min_side (a 4000 px photo for a 224 px model never decodes at full size).

    An SVG is rasterized first (sanitized: no scripts, no references outside the document; see mmrag.svg).
    Corrupt, truncated or oversized images raise PermanentError naming ``subject``, with ``fix`` as what to do.
    """
    if looks_like_svg(data):
        data = rasterize_svg(data, subject, stage)
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_PIXELS:
                raise Image.DecompressionBombError(f"{img.width}x{img.height} is over {MAX_PIXELS} pixels")
            if min_side and img.format == "JPEG":
                img.draft("RGB", (min_side, min_side))
            img.seek(0)
            img.load()
            return _to_rgb(ImageOps.exif_transpose(img))
    except UnidentifiedImageError as exc:
        raise PermanentError(stage, subject, "cannot decode image (not PNG, JPEG, WebP, GIF or SVG data)", fix) from exc
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise PermanentError(stage, subject, f"cannot decode image ({type(exc).__name__}: {exc})", fix) from exc


def is_blank(image: Image.Image) -> bool:
    """True when every pixel of ``image`` has one colour: nothing is visible (an SVG of scripts or metadata only, an
    empty canvas). Exact, not a tolerance: a faint line or a single dot is content."""
    return all(low == high for low, high in _band_extrema(image))


def require_visible(image: Image.Image, subject: str, stage: str) -> Image.Image:
    """``image`` when anything in it is visible; PermanentError naming ``subject`` when it renders blank (its vector
    would say nothing of the object and match every other blank image)."""
    if is_blank(image):
        colour = "".join(f"{int(low):02x}" for low, _ in _band_extrema(image))
        raise PermanentError(
            stage,
            subject,
            f"renders blank (every pixel is #{colour}): nothing visible to index",
            "upload the image with visible content (an SVG needs shapes, text or images, not only scripts or metadata)",
        )
    return image


def _band_extrema(image: Image.Image) -> list[tuple[float, float]]:
    """(lowest, highest) value of each band (Pillow returns a bare pair for one-band images)."""
    extrema = image.getextrema()
    return list(extrema) if isinstance(extrema[0], tuple) else [extrema]


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        img = img.point(lambda v: v / 256).convert("L")  # 16-bit samples -> 8-bit, not clipped to white
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, "white")
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")
