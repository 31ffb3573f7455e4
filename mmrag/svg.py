"""SVG is an image: it is rasterized and embedded like any picture, never indexed as markup or scripts.

The renderer is resvg (Rust, no script engine). Before it runs, the document is parsed without entities, DTDs or
network access, and scripts, foreign objects and every reference that leaves the document (a local path or URL in
``href``; nested SVG data) are removed: resvg would otherwise read local files named by an uploaded image."""

from __future__ import annotations

from mmrag.errors import PermanentError
from mmrag.text_decoding import bom_charset, markup_root

MAX_SIDE = 2048  # the raster fits in MAX_SIDE x MAX_SIDE whatever size the SVG claims
REMOVED_ELEMENTS = frozenset({"script", "foreignObject", "handler", "listener"})
SAFE_DATA_URIS = ("data:image/png", "data:image/jpeg", "data:image/jpg", "data:image/gif", "data:image/webp")


def looks_like_svg(data: bytes) -> bool:
    """True when the bytes are an SVG document (any Unicode encoding, declarations and comments allowed first)."""
    head = data[:4096]
    bom = bom_charset(head)
    codec, start = bom if bom is not None else ("utf-8", 0)
    return markup_root(head[start:].decode(codec, errors="ignore")) == "svg"


def rasterize_svg(data: bytes, subject: str, stage: str, max_side: int = MAX_SIDE) -> bytes:
    """PNG bytes of the sanitized SVG, fitted into ``max_side`` squared (aspect kept).

    Raises PermanentError naming ``subject`` when the document is not well-formed or cannot be rendered.
    """
    import resvg_py

    svg = sanitized_svg(data, subject, stage)
    try:
        # generic families mapped to fonts Debian installs with tesseract's dependencies (fonts-dejavu-core)
        png = resvg_py.svg_to_bytes(
            svg_string=svg,
            width=max_side,
            height=max_side,
            font_family="DejaVu Sans",
            serif_family="DejaVu Serif",
            sans_serif_family="DejaVu Sans",
            monospace_family="DejaVu Sans Mono",
        )
        return bytes(png)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - pyo3 raises a Rust panic as PanicException, a BaseException
        raise PermanentError(stage, subject, f"cannot render SVG ({exc})", "re-export the SVG or upload a PNG") from exc


def sanitized_svg(data: bytes, subject: str, stage: str) -> str:
    """The SVG without scripts, foreign objects and references outside itself; PermanentError when not XML."""
    from lxml import etree

    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, remove_comments=True, remove_pis=True
    )
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise PermanentError(stage, subject, f"not a well-formed SVG ({exc})", "re-export the SVG") from exc
    doomed = [el for el in root.iter() if isinstance(el.tag, str) and etree.QName(el).localname in REMOVED_ELEMENTS]
    for element in doomed:
        parent = element.getparent()
        if parent is not None:
            parent.remove(element)
    for element in root.iter():
        for name in [n for n in element.attrib if etree.QName(n).localname in ("href", "src")]:
            value = element.attrib[name].strip()
            if not (value.startswith("#") or value.lower().startswith(SAFE_DATA_URIS)):
                del element.attrib[name]
    return str(etree.tostring(root, encoding="unicode"))
