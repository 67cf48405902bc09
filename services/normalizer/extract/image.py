"""Images (PNG, JPEG, TIFF, multi-page TIFF, WebP, GIF) read by Tesseract's OCR, a page per
frame, with Pillow's decompression-bomb guard at a pixel budget of our own."""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageSequence, UnidentifiedImageError

from services.contracts import RejectReason
from services.normalizer.extract import Extracted, Rejection, ocr

MAX_PIXELS = 60_000_000  # per frame: an A4 page at 600 dpi is 35 M; Pillow's own guard is at 89 M
MAX_FRAMES = 500


def extract(data: bytes) -> Extracted:
    if ocr.tesseract() is None:
        raise Rejection(RejectReason.NO_TEXT, f"an image has text only through OCR{ocr.missing_hint()}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            picture = Image.open(io.BytesIO(data))
            width, height = picture.size
            if width * height > MAX_PIXELS:
                raise Rejection(RejectReason.BOMB, f"the image is {width}x{height} pixels, over {MAX_PIXELS}; "
                                                   "not decoded")
            frames = getattr(picture, "n_frames", 1)
            if frames > MAX_FRAMES:
                raise Rejection(RejectReason.TOO_LARGE, f"the image has {frames} pages, over {MAX_FRAMES}")
            pages = [ocr.read(frame.convert("L")) for frame in ImageSequence.Iterator(picture)]
    except Rejection:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise Rejection(RejectReason.BOMB, f"the image would decode to too many pixels ({exc})") from None
    except UnidentifiedImageError:
        raise Rejection(RejectReason.CORRUPT, "the image cannot be decoded: its bytes are no image Pillow "
                                              "knows, or damaged past its header") from None
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow's ways of saying "damaged"
        raise Rejection(RejectReason.CORRUPT, f"the image cannot be decoded ({type(exc).__name__}: {exc})") from None
    return Extracted(pages=pages, paged=True)
