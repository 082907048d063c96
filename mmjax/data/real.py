"""Loaders for MPI3D-Complex (.npz) and Causal3DIdent/Multimodal3DIdent folders.

These are the real datasets of the image–text experiments of Cai et al. (arXiv 2504.10143).

Both return a `RealData`: images (indexable, uint8 (H, W, 3) per example), a factor table (one array per
factor, row i describing image i) and captions where the data has them. Nothing is downloaded; a missing
or malformed file gives a one-line `DatasetError` naming the file, what was found and what is expected.

MPI3D (`real3d_complicated_shapes_ordered.npz`): one array `images` (N, 64, 64, 3) uint8 in the ordered
layout, i.e. image i has factors `np.unravel_index(i, factor_sizes)`; for MPI3D-Complex the sizes are
colour 4, shape 4, size 2, camera height 3, background 3, horizontal 40, vertical 40 (N = 460800).

Multimodal3DIdent (Daunhawer et al., 2023; github.com/imantdaunhawer/Multimodal3DIdent), one folder per
split (`train/`, `val/`, `test/`)::

    images/000000.png, 000001.png, ...   (numbered in example order)
    text/text_raw.txt                    (one caption per line)
    latents_image.csv, latents_text.csv  (a header row, then one row per example)

Also accepted: `latents_image.npy` / `latents_text.npy` or a single `latents.npy` (N, k) instead of the
CSV files, and `captions.txt` (one per line) instead of `text/text_raw.txt`.
"""

from __future__ import annotations

import csv
import math
import struct
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmjax.data.tfds_io import DatasetError, DatasetMissingError

MPI3D_FACTORS = ("colour", "shape", "size", "height", "background", "horizontal", "vertical")
MPI3D_COMPLEX_SIZES = (4, 4, 2, 3, 3, 40, 40)
MPI3D_FILE = "real3d_complicated_shapes_ordered.npz"
CAPTION_FILES = ("text/text_raw.txt", "captions.txt")
SPLIT_DIRS = ("train", "val", "test")


class PngImages(Sequence):
    """PNG files read on access: `[i]` gives uint8 (H, W, 3); a slice or index array gives a stacked batch."""

    def __init__(self, paths: Sequence[Path]):
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):
        if isinstance(index, int | np.integer):
            return read_png(self.paths[index])
        indices = range(len(self))[index] if isinstance(index, slice) else np.asarray(index).ravel()
        return np.stack([read_png(self.paths[int(i)]) for i in indices])


@dataclass(frozen=True)
class RealData:
    """Images, a table of image factors, and (where present) text factors and captions, row-aligned."""

    images: np.ndarray | PngImages
    factors: dict[str, np.ndarray]
    captions: list[str] | None = None
    text_factors: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.images)


def read_png(path: str | Path) -> np.ndarray:
    """An image file as uint8 (H, W, 3) (grey or RGBA converted to RGB)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise DatasetMissingError(f"image {path} not found") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DatasetError(f"image {path} cannot be read as PNG: {err}") from None


# ------------------------------------------------------------------------------------------------ MPI3D
def _stored_npz_member(path: Path, member: str) -> np.ndarray | None:
    """A memory map of an uncompressed .npz member's array, or None if it is compressed or not plain."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
        if header[:4] != b"PK\x03\x04":
            return None
        name_length, extra_length = struct.unpack("<HH", header[26:30])
        f.seek(info.header_offset + 30 + name_length + extra_length)
        version = np.lib.format.read_magic(f)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            return None
        shape, fortran_order, dtype = read_header(f)
        offset = f.tell()
    if dtype.hasobject:
        return None
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape,
                     order="F" if fortran_order else "C")


def _mpi3d_images(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        try:
            return np.load(path, mmap_mode="r")
        except (ValueError, OSError) as err:
            raise DatasetError(f"MPI3D file {path} cannot be read as .npy: {err}") from None
    if not zipfile.is_zipfile(path):
        raise DatasetError(f"MPI3D file {path} is not a .npz archive: expected {MPI3D_FILE} as downloaded")
    try:
        with np.load(path) as archive:
            if "images" not in archive.files:
                found = ", ".join(archive.files) or "none"
                raise DatasetError(f"MPI3D file {path} has no 'images' array (found: {found}): "
                                   "expected images (N, 64, 64, 3) uint8")
        mapped = _stored_npz_member(path, "images.npy")
        if mapped is not None:
            return mapped
        with np.load(path) as archive:  # a compressed member: it has to be read into memory
            return archive["images"]
    except DatasetError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, KeyError) as err:
        raise DatasetError(f"MPI3D file {path} cannot be read: {err}") from None


def load_mpi3d(path: str | Path, factor_sizes: Sequence[int] = MPI3D_COMPLEX_SIZES,
               factor_names: Sequence[str] = MPI3D_FACTORS) -> RealData:
    """MPI3D's ordered `images` (memory-mapped when stored uncompressed) and factors from the index."""
    sizes, names = tuple(factor_sizes), tuple(factor_names)
    if not sizes or not all(isinstance(s, int | np.integer) and s >= 1 for s in sizes):
        raise DatasetError(f"factor_sizes={sizes!r} is invalid: must be positive ints")
    if len(names) != len(sizes) or len(set(names)) != len(names):
        raise DatasetError(f"factor_names={names!r} is invalid: need {len(sizes)} distinct names, one per "
                           f"entry of factor_sizes={sizes!r}")
    path = Path(path)
    if not path.is_file():
        raise DatasetMissingError(f"MPI3D file {path} not found: download {MPI3D_FILE} "
                                  "(github.com/rr-learning/disentanglement_dataset) and pass its path")
    images = _mpi3d_images(path)
    if images.ndim == 3 + len(sizes) and images.shape[: len(sizes)] == sizes:
        images = images.reshape(-1, *images.shape[len(sizes):])  # the (6, 6, 2, ..., 64, 64, 3) layout
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise DatasetError(f"MPI3D file {path}: images has shape {images.shape} and dtype {images.dtype}; "
                           "expected (N, H, W, 3) uint8")
    expected = math.prod(sizes)
    if images.shape[0] != expected:
        raise DatasetError(f"MPI3D file {path}: images holds {images.shape[0]} images but "
                           f"factor_sizes={sizes} give {expected}; pass the factor sizes of this file")
    index = np.unravel_index(np.arange(expected), sizes)
    factors = {name: column.astype(np.int32) for name, column in zip(names, index, strict=True)}
    return RealData(images=images, factors=factors)


# ------------------------------------------------------------------------------------------------ 3DIdent
def _number_key(path: Path) -> tuple:
    return (0, int(path.stem), "") if path.stem.isdigit() else (1, 0, path.stem)


def _read_csv(path: Path) -> dict[str, np.ndarray]:
    """Columns of a CSV file with a header row: int, float or str arrays (whichever parses)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or not rows[0]:
        raise DatasetError(f"latents file {path} is empty: expected a header row, then one row per example")
    header, body = rows[0], [r for r in rows[1:] if r]
    for line, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DatasetError(f"latents file {path} line {line} has {len(row)} fields; the header has "
                               f"{len(header)}")
    columns = {}
    for j, name in enumerate(header):
        values = [row[j] for row in body]
        for kind in (int, float):
            try:
                columns[name] = np.asarray([kind(v) for v in values], np.int64 if kind is int else np.float64)
                break
            except ValueError:
                continue
        else:
            columns[name] = np.asarray(values, dtype=str)
    return columns


def _read_npy_table(path: Path, names: Sequence[str] | None) -> dict[str, np.ndarray]:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise DatasetError(f"latents file {path} cannot be read as .npy: {err}") from None
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise DatasetError(f"latents file {path} has shape {array.shape}; expected (N, k) or (N,)")
    if names is None:
        names = [f"latent_{j}" for j in range(array.shape[1])]
    elif len(names) != array.shape[1]:
        raise DatasetError(f"factor_names={tuple(names)!r} is invalid for {path}: it has {array.shape[1]} "
                           "columns")
    return {name: array[:, j] for j, name in enumerate(names)}


def _table(directory: Path, stem: str, names: Sequence[str] | None) -> tuple[Path, dict] | None:
    for suffix in (".csv", ".npy"):
        path = directory / f"{stem}{suffix}"
        if path.is_file():
            return path, _read_csv(path) if suffix == ".csv" else _read_npy_table(path, names)
    return None


def load_causal3dident(directory: str | Path, split: str | None = None, require_captions: bool = True,
                       factor_names: Sequence[str] | None = None) -> RealData:
    """A Causal3DIdent/Multimodal3DIdent split folder (layout in the module doc); images are read lazily.

    `split` picks a subfolder (e.g. "train"); `factor_names` names the columns of a `.npy` latents file
    (default latent_0, latent_1, ...). Without captions, `require_captions=False` gives `captions=None`.
    """
    root = Path(directory)
    folder = root / split if split is not None else root
    if not folder.is_dir():
        raise DatasetMissingError(f"3DIdent directory {folder} not found: pass the folder holding images/, "
                                  "the latents and the captions")
    image_dir = folder / "images"
    if not image_dir.is_dir():
        splits = [s for s in SPLIT_DIRS if (folder / s / "images").is_dir()]
        hint = f"it holds splits {', '.join(splits)}: pass split=" if splits else "expected images/*.png"
        raise DatasetMissingError(f"3DIdent directory {folder} has no images/ folder; {hint}")
    paths = sorted(image_dir.glob("*.png"), key=_number_key)
    if not paths:
        raise DatasetError(f"3DIdent images folder {image_dir} has no .png files")
    read_png(paths[0])  # fail now, not mid-training, if the files are not images
    images = PngImages(paths)

    counts = {f"{image_dir.name}/ (.png files)": len(images)}
    image_table = _table(folder, "latents_image", factor_names) or _table(folder, "latents", factor_names)
    if image_table is None:
        raise DatasetMissingError(f"3DIdent directory {folder} has no latents: expected latents_image.csv, "
                                  "latents_image.npy or latents.npy")
    factors_path, factors = image_table
    counts[factors_path.name] = len(next(iter(factors.values())))
    text_table = _table(folder, "latents_text", factor_names)
    text_factors = None
    if text_table is not None:
        text_path, text_factors = text_table
        counts[text_path.name] = len(next(iter(text_factors.values())))

    captions = None
    caption_path = next((folder / name for name in CAPTION_FILES if (folder / name).is_file()), None)
    if caption_path is not None:
        captions = caption_path.read_text(encoding="utf-8").splitlines()
        while captions and not captions[-1].strip():
            captions.pop()
        counts[str(caption_path.relative_to(folder))] = len(captions)
    elif require_captions:
        raise DatasetMissingError(f"3DIdent directory {folder} has no captions: expected "
                                  f"{' or '.join(CAPTION_FILES)} (one caption per line), or pass "
                                  "require_captions=False")
    if len(set(counts.values())) > 1:
        found = ", ".join(f"{name} {n}" for name, n in counts.items())
        raise DatasetError(f"3DIdent directory {folder}: counts differ ({found}); images, latents and "
                           "captions must correspond one to one")
    return RealData(images=images, factors=factors, captions=captions, text_factors=text_factors)

