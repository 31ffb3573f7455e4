"""PDFs read by several extract workers at once (the text embedder's thread pool): PDFium is not thread-safe, and two
PDFs read in parallel crashed the whole process with SIGSEGV (CI, test_cost_lanes). The run goes in a child process
so that a crash is this test's failure, not the end of the test session."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.unit

CHILD = textwrap.dedent(
    """
    import sys
    from concurrent.futures import ThreadPoolExecutor

    from consumers.text_embedder.extract import Budget, Extractor, Limits
    from mmrag.pb.events_pb2 import MediaKind
    from tests.documents import pdf_bytes

    class CountingOcr:
        '''Reads nothing: the scanned pages are rendered (pdfium) but the test is about pdfium, not Tesseract.'''

        def image_text(self, image, subject, timeout_s=None):
            return f"scan {image.width}x{image.height}"

    WORKERS, PER_WORKER = 4, 12
    extractor = Extractor(CountingOcr(), Limits())

    def read(worker):
        seen = []
        for n in range(PER_WORKER):
            words = [f"worker {worker} document {n} page {p}" for p in range(3)]
            data = pdf_bytes(words, [f"SCAN {worker} {n}"])
            subject = f"b/w{worker}-{n}.pdf"
            pages = list(extractor.pages(MediaKind.MEDIA_KIND_DOCUMENT, data, subject, "", Budget(subject, 600)))
            assert [p.number for p in pages] == [1, 2, 3, 4], (subject, pages)
            assert all(w in p.text for w, p in zip(words, pages)), (subject, pages)
            assert pages[3].text.startswith("scan "), (subject, pages[3])
            seen.append(subject)
        return seen

    with ThreadPoolExecutor(WORKERS) as pool:
        done = [s for seen in pool.map(read, range(WORKERS)) for s in seen]
    print(len(done), "pdfs read")
    sys.exit(0 if len(done) == WORKERS * PER_WORKER else 1)
    """
)


def test_pdfs_read_in_parallel_threads_do_not_crash_the_process() -> None:
    child = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", CHILD], capture_output=True, text=True, timeout=120
    )
    assert child.returncode == 0, f"exit {child.returncode}\n{child.stdout}\n{child.stderr[-4000:]}"
    assert "48 pdfs read" in child.stdout
