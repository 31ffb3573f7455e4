"""Builders of real test documents (PDF, DOCX, HTML, images with words) for the extraction tests."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw, ImageFont


def words_image(text: str, size: tuple[int, int] = (900, 160), mode: str = "RGB") -> Image.Image:
    img = Image.new("RGB", size, "white")
    ImageDraw.Draw(img).text((20, 40), text, fill="black", font=ImageFont.load_default(size=56))
    if mode == "I;16":  # real 16-bit samples span 0..65535
        import numpy as np

        return Image.fromarray(np.asarray(img.convert("L"), dtype=np.uint16) * 257)
    return img.convert(mode) if mode != "RGB" else img


def png_bytes(img: Image.Image, fmt: str = "PNG", **save: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save)
    return buf.getvalue()


def pdf_bytes(pages: list[str], scanned: list[str] | None = None) -> bytes:
    """A PDF with a text layer per page in ``pages``, then image-only pages showing ``scanned`` words."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=14)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    for text in scanned or []:
        pdf.add_page()
        pdf.image(io.BytesIO(png_bytes(words_image(text))), x=10, y=20, w=180)
    return bytes(pdf.output())


def empty_pdf(pages: int) -> bytes:
    """A PDF of ``pages`` pages with nothing on them (issue 19's 37 KB "scan" of 300 empty pages)."""
    from fpdf import FPDF

    pdf = FPDF()
    for _ in range(pages):
        pdf.add_page()
    return bytes(pdf.output())


def scanned_pdf(pages: int, words: str = "SCANNED PAGE", hidden_space: bool = False) -> bytes:
    """A scanned book: ``pages`` pages, each one picture of ``words`` and no text layer (fpdf2 stores the picture
    once, so 300 pages stay ~120 KB). ``hidden_space``: each page also holds a text object of one space, as some
    scanners write, so only its extraction shows the page needs OCR."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=14)
    picture = png_bytes(words_image(words))
    for _ in range(pages):
        pdf.add_page()
        if hidden_space:
            pdf.cell(10, 8, " ")
        pdf.image(io.BytesIO(picture), x=10, y=20, w=180)
    return bytes(pdf.output())


def docx_bytes(paragraphs: list[str], cells: list[str]) -> bytes:
    import docx

    document = docx.Document()
    for text in paragraphs:
        document.add_paragraph(text)
    table = document.add_table(rows=1, cols=len(cells))
    for cell, text in zip(table.rows[0].cells, cells, strict=True):
        cell.text = text
    buf = io.BytesIO()
    document.save(buf)
    return buf.getvalue()


HTML = b"""<!doctype html><html><head><title>Ignored title</title><style>.x{color:red}</style>
<script>var hidden = "do not index me";</script></head>
<body><h1>Tide pools</h1><p>Sea anemones and   starfish live   in them.</p><noscript>no script</noscript>
<ul><li>Visit at low tide</li></ul></body></html>"""


def bomb_png(side: int = 20000) -> bytes:
    """A PNG whose header claims side x side pixels: refused before any pixel is decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def zip_bomb_docx(body_mib: int) -> bytes:
    """A real DOCX whose word/document.xml is replaced by ``body_mib`` MiB of highly compressible text: a small
    file that would unpack to a huge body."""
    import zipfile

    real = zipfile.ZipFile(io.BytesIO(docx_bytes(["Quarterly report"], ["cell"])))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as bomb:
        for info in real.infolist():
            if info.filename != "word/document.xml":
                bomb.writestr(info, real.read(info))
        with bomb.open("word/document.xml", "w") as body:
            for _ in range(body_mib):
                body.write(b"<w:p>" + b"a" * (1 << 20))
    return buf.getvalue()


def circle_png(fill: str = "red") -> bytes:
    """A 64x64 PNG: a filled circle on white (the stack tests' image upload and image query)."""
    img = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(img).ellipse((12, 12, 52, 52), fill=fill)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
