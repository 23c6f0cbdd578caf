"""Image sources and the deliberate conversion of every pixel format to 8-bit RGB.

Backbones expect 8-bit RGB. Medical images often are not: 16-bit grayscale PNGs (X-ray, CT
windows), 8-bit grayscale, RGBA screenshots, palette PNGs and CMYK TIFFs all occur in public sets.
PIL's ``convert("RGB")`` silently clips 16-bit data to 255, so each mode is converted on purpose.

Sources are picklable and open files lazily, so each DataLoader worker holds its own handle.

Large JPEGs can be decoded in PIL's draft mode: libjpeg scales the DCT by 1/2, 1/4 or 1/8 while
decoding, far cheaper than a full decode followed by a resize (DESIGN section 5; measured by
benchmarks/datasets_jpeg.py).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from PIL import Image, ImageFile

from featlab.errors import BadImageError, DatasetError

# A truncated file must fail loudly, not decode into a grey half-image.
ImageFile.LOAD_TRUNCATED_IMAGES = False

ImageOrError = Image.Image | BadImageError


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL image to 8-bit RGB deliberately.

    - ``I;16*`` / ``I`` (16-bit and 32-bit integer grayscale): scaled linearly from the full
      16-bit range (value / 257), never clipped; values above 65535 are an error.
    - ``F`` (float grayscale): rejected, because its intensity range is unknown.
    - ``L``, ``1``, ``LA``: gray replicated into the three channels (alpha dropped).
    - ``RGBA``, ``PA``, ``P`` with transparency: the alpha channel is discarded; colours are kept.
    - ``CMYK``, ``YCbCr``, ``P``: PIL's standard conversion to RGB.

    Raises:
        BadImageError: For float images and integer images outside the 16-bit range.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(img)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise BadImageError(
                f"{mode} image has values in [{a.min()}, {a.max()}], outside 0..65535; "
                "featlab converts 16-bit data by value/257 and cannot scale this deliberately."
            )
        # Full-range linear scaling keeps contrast as stored; +128 rounds to nearest.
        a8 = ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(a8, mode="L").convert("RGB")
    if mode == "F":
        raise BadImageError(
            "float image (PIL mode F): its intensity range is unknown, so featlab will not "
            "guess a scaling; convert it to 8- or 16-bit first."
        )
    if mode in ("L", "1", "LA", "La"):
        return img.convert("L").convert("RGB")
    if mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in img.info):
        return img.convert("RGBA").convert("RGB")
    return img.convert("RGB")


def array_to_image(a: np.ndarray) -> Image.Image:
    """Turn one image array into an RGB PIL image.

    Args:
        a: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``; dtype uint8 or uint16.

    Raises:
        BadImageError: For other shapes or dtypes.
    """
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.dtype.kind == "u" and a.dtype.itemsize == 2:  # uint16, either byte order
        if a.ndim != 2:
            raise BadImageError(f"uint16 arrays must be (H, W) grayscale; got shape {a.shape}")
        # No explicit mode: Pillow picks I;16 / I from the dtype (Pillow >= 12 rejects mode="I;16").
        return to_rgb(Image.fromarray(a))
    if a.dtype != np.uint8:
        raise BadImageError(f"image arrays must be uint8 or uint16; got {a.dtype}")
    if a.ndim == 2:
        return Image.fromarray(a, mode="L").convert("RGB")
    if a.ndim == 3 and a.shape[2] in (3, 4):
        return to_rgb(Image.fromarray(np.ascontiguousarray(a)))
    raise BadImageError(f"image arrays must be (H, W[, 1|3|4]); got shape {a.shape}")


class ImageSource(Protocol):
    """Reads images by sample row. Implementations must be picklable (DataLoader workers)."""

    def __len__(self) -> int: ...

    def load(self, rows: Sequence[int]) -> list[ImageOrError]:
        """Return one RGB image, or the error that prevented reading it, per row."""
        ...


# Draft only when the DCT can drop at least one factor of 2 and still leave every side >= the
# target: below that, PIL would decode at full size anyway.
DRAFT_MIN_RATIO = 2


def draft_jpeg(img: Image.Image, target: int) -> bool:
    """Ask PIL to decode a JPEG at reduced scale, keeping both sides ``>= target`` pixels.

    ``Image.draft`` picks the largest DCT scale (1/2, 1/4, 1/8) for which the decoded image is still
    at least ``target`` on both sides, so the later resize to ``target`` still downsamples and the
    quality at the target size is kept. Must be called before the image is loaded.

    Args:
        img: An opened, not yet loaded image.
        target: Side length (pixels) the image will be resized to afterwards.

    Returns:
        True if draft mode was applied (JPEG at least ``DRAFT_MIN_RATIO`` x ``target``).
    """
    if img.format != "JPEG" or min(img.size) < DRAFT_MIN_RATIO * target:
        return False
    img.draft(None, (target, target))  # mode None: colour conversion stays as without draft
    return True


def open_image_file(path: str, draft_size: int | None = None) -> Image.Image:
    """Open, fully decode and convert one image file to RGB.

    Args:
        path: The image file.
        draft_size: If given, JPEGs at least twice this size are decoded in draft mode to no less
            than ``draft_size`` on each side (see :func:`draft_jpeg`); other files are unaffected.

    Raises:
        BadImageError: Naming the file, for missing, empty, truncated or undecodable files.
    """
    try:
        if os.path.getsize(path) == 0:
            raise BadImageError(f"{path}: file is empty (0 bytes)")
        with Image.open(path) as img:
            if draft_size:
                draft_jpeg(img, draft_size)
            img.load()  # decode now, inside the try, so truncation is caught here
            return to_rgb(img)
    except BadImageError as err:
        if str(err).startswith(path):
            raise
        raise BadImageError(f"{path}: {err}") from err
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise BadImageError(f"{path}: cannot decode image ({type(err).__name__}: {err})") from err


class FileImages:
    """Images stored as files, one path per sample.

    Attributes:
        paths: One file path per sample.
        draft_size: ``None`` (default) decodes every file at full size; an int lets large JPEGs
            decode in draft mode to no less than this many pixels a side (see :meth:`with_draft`).
    """

    def __init__(self, paths: Sequence[str], draft_size: int | None = None) -> None:
        self.paths = [str(p) for p in paths]
        self.draft_size = draft_size

    def __len__(self) -> int:
        return len(self.paths)

    def with_draft(self, size: int | None) -> FileImages:
        """A copy that decodes JPEGs of at least ``2 * size`` pixels a side in draft mode.

        ``size`` should be the side the model's transform resizes to (input size / crop_pct), so
        the draft-decoded image is still downsampled by that resize.
        """
        copy = FileImages([], draft_size=size)
        copy.paths = self.paths  # shared, read-only
        return copy

    def load(self, rows: Sequence[int]) -> list[ImageOrError]:
        out: list[ImageOrError] = []
        for r in rows:
            try:
                out.append(open_image_file(self.paths[r], self.draft_size))
            except BadImageError as err:
                out.append(err)
        return out


class ArrayImages:
    """Images held in an in-memory array of shape (n, H, W[, C]), uint8 or uint16."""

    def __init__(self, images: np.ndarray) -> None:
        if images.ndim not in (3, 4):
            raise DatasetError(f"image array must be (n, H, W[, C]); got shape {images.shape}")
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def load(self, rows: Sequence[int]) -> list[ImageOrError]:
        return [_array_or_error(self.images[r]) for r in rows]


class HDF5Images:
    """Images in one HDF5 dataset of shape (n, H, W[, C]), read in contiguous slices.

    The file is opened lazily once per process (each DataLoader worker keeps its own handle), and a
    batch of consecutive rows is one slice read, not one read per image.
    """

    def __init__(self, path: str, key: str) -> None:
        self.path, self.key = str(path), key
        self._file = None
        self._pid = -1
        self._n = int(self._dataset().shape[0])

    def __getstate__(self) -> dict:
        return {"path": self.path, "key": self.key, "_n": self._n, "_file": None, "_pid": -1}

    def _dataset(self):
        import h5py

        if self._file is None or self._pid != os.getpid():
            try:
                self._file = h5py.File(self.path, "r")
            except OSError as err:
                raise DatasetError(f"{self.path}: cannot open HDF5 file ({err})") from err
            self._pid = os.getpid()
            if self.key not in self._file:
                raise DatasetError(
                    f"{self.path}: no dataset {self.key!r}; found {sorted(self._file.keys())}"
                )
        return self._file[self.key]

    def __len__(self) -> int:
        return self._n

    def load(self, rows: Sequence[int]) -> list[ImageOrError]:
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return []
        ds = self._dataset()
        lo, hi = int(rows.min()), int(rows.max()) + 1
        try:
            block = ds[lo:hi]  # one contiguous read; sparse rows are picked from it
        except OSError as err:
            raise DatasetError(
                f"{self.path}#{self.key}: cannot read rows {lo}..{hi - 1}: {err}"
            ) from err
        return [_array_or_error(block[r - lo]) for r in rows]


def _array_or_error(a: np.ndarray) -> ImageOrError:
    try:
        return array_to_image(np.asarray(a))
    except BadImageError as err:
        return err
