"""Loaders for MPI3D (.npz) and Causal3DIdent/Multimodal3DIdent folders, on tiny fakes written here."""

import csv
import math

import numpy as np
import pytest
from PIL import Image

from mmjax.data.real import MPI3D_FACTORS, PngImages, load_causal3dident, load_mpi3d
from mmjax.data.tfds_io import DatasetError, DatasetMissingError

SIZES = (2, 2, 2, 3, 3, 2, 2)  # MPI3D's 7 factors, shrunk: 288 images
N = math.prod(SIZES)


def fake_images(n: int, side: int = 4) -> np.ndarray:
    """Image i is filled with i % 256 in red, so an image's index can be read back from it."""
    images = np.zeros((n, side, side, 3), np.uint8)
    images[..., 0] = (np.arange(n) % 256)[:, None, None]
    return images


# ------------------------------------------------------------------------------------------------ MPI3D
@pytest.mark.parametrize("compressed", [False, True])
def test_mpi3d_images_and_factor_table(tmp_path, compressed):
    path = tmp_path / "real3d_complicated_shapes_ordered.npz"
    (np.savez_compressed if compressed else np.savez)(path, images=fake_images(N))
    data = load_mpi3d(path, factor_sizes=SIZES)
    assert len(data) == N and data.images.shape == (N, 4, 4, 3) and data.images.dtype == np.uint8
    assert isinstance(data.images, np.memmap) != compressed  # stored members are memory-mapped
    assert tuple(data.factors) == MPI3D_FACTORS and data.captions is None
    table = np.stack([data.factors[f] for f in MPI3D_FACTORS], axis=1)
    assert table.dtype == np.int32 and table.shape == (N, 7)
    np.testing.assert_array_equal(table.max(axis=0), np.asarray(SIZES) - 1)
    # Ordered layout: the last factor (vertical) varies fastest; row i is unravel_index(i, SIZES).
    np.testing.assert_array_equal(table[:3], [[0] * 6 + [0], [0] * 6 + [1], [0] * 5 + [1, 0]])
    for i in (0, 1, 77, N - 1):
        np.testing.assert_array_equal(table[i], np.unravel_index(i, SIZES))
        assert data.images[i][0, 0, 0] == i % 256
    # The same array saved in the factor-shaped layout (..., H, W, 3) is flattened.
    np.savez(tmp_path / "shaped.npz", images=fake_images(N).reshape(*SIZES, 4, 4, 3))
    np.testing.assert_array_equal(load_mpi3d(tmp_path / "shaped.npz", factor_sizes=SIZES).images,
                                  fake_images(N))


def test_mpi3d_errors(tmp_path):
    with pytest.raises(DatasetMissingError, match=r"MPI3D file .*missing.npz not found: download "
                                                  "real3d_complicated_shapes_ordered.npz"):
        load_mpi3d(tmp_path / "missing.npz")
    np.savez(tmp_path / "nokey.npz", imgs=fake_images(4))
    with pytest.raises(DatasetError, match=r"has no 'images' array \(found: imgs\): expected images "
                                           r"\(N, 64, 64, 3\) uint8"):
        load_mpi3d(tmp_path / "nokey.npz")
    np.savez(tmp_path / "count.npz", images=fake_images(N))
    with pytest.raises(DatasetError, match=r"images holds 288 images but factor_sizes=\(4, 4, 2, 3, 3, 40, "
                                           r"40\) give 460800; pass the factor sizes of this file"):
        load_mpi3d(tmp_path / "count.npz")
    np.savez(tmp_path / "dtype.npz", images=fake_images(N).astype(np.float32))
    with pytest.raises(DatasetError, match=r"shape \(288, 4, 4, 3\) and dtype float32; expected "
                                           r"\(N, H, W, 3\) uint8"):
        load_mpi3d(tmp_path / "dtype.npz", factor_sizes=SIZES)
    (tmp_path / "text.npz").write_text("not an archive")
    with pytest.raises(DatasetError, match="is not a .npz archive"):
        load_mpi3d(tmp_path / "text.npz")
    with pytest.raises(DatasetError, match="factor_names=.* need 7 distinct names"):
        load_mpi3d(tmp_path / "count.npz", factor_sizes=SIZES, factor_names=("a", "b"))
    with pytest.raises(DatasetError, match=r"factor_sizes=\(2, 0\) is invalid"):
        load_mpi3d(tmp_path / "count.npz", factor_sizes=(2, 0), factor_names=("a", "b"))


# ------------------------------------------------------------------------------------------------ 3DIdent
SHAPES = ("teapot", "hare", "dragon")
COLOURS = ("xkcd:bright aqua", "lawngreen", "tab:red")


def write_m3di(folder, n: int = 3, latents: str = "csv", captions: str = "text/text_raw.txt"):
    """A Multimodal3DIdent-style split folder with n images of 6x6 (image i is filled with 10 * i)."""
    (folder / "images").mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((6, 6, 3), 10 * i, np.uint8)).save(folder / "images" / f"{i:06d}.png")
    shape = np.arange(n) % 3
    if latents == "csv":
        with open(folder / "latents_image.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["object_shape", "object_xpos", "object_alpharot"])
            writer.writerows([shape[i], i % 2, 0.25 * i] for i in range(n))
        with open(folder / "latents_text.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["object_shape", "object_color_name", "text_phrasing"])
            writer.writerows([shape[i], COLOURS[i % 3], i % 5] for i in range(n))
    else:
        np.save(folder / "latents.npy", np.stack([shape, 0.5 * np.arange(n)], axis=1))
    if captions:
        lines = [f'A "{COLOURS[i % 3]}" {SHAPES[shape[i]]} is at the top-left of the image.'
                 for i in range(n)]
        (folder / captions).parent.mkdir(exist_ok=True)
        (folder / captions).write_text("\n".join(lines))  # no newline after the last line, as generated
    return folder


def test_multimodal3dident_layout(tmp_path):
    write_m3di(tmp_path / "m3di" / "train", n=3)
    data = load_causal3dident(tmp_path / "m3di", split="train")
    assert len(data) == 3 and isinstance(data.images, PngImages)
    assert data.images[2].shape == (6, 6, 3) and data.images[2].dtype == np.uint8
    assert data.images[2][0, 0, 0] == 20
    np.testing.assert_array_equal(data.images[1:][:, 0, 0, 0], [10, 20])
    np.testing.assert_array_equal(data.factors["object_shape"], [0, 1, 2])
    assert data.factors["object_shape"].dtype == np.int64
    np.testing.assert_allclose(data.factors["object_alpharot"], [0, 0.25, 0.5])
    assert list(data.text_factors["object_color_name"]) == list(COLOURS)
    assert data.captions[0] == 'A "xkcd:bright aqua" teapot is at the top-left of the image.'
    # The root holds splits: a clear hint instead of a bare "missing".
    with pytest.raises(DatasetMissingError, match="no images/ folder; it holds splits train: pass split="):
        load_causal3dident(tmp_path / "m3di")


def test_npy_latents_and_captions_txt(tmp_path):
    folder = write_m3di(tmp_path / "c3di", n=12, latents="npy", captions="captions.txt")
    data = load_causal3dident(folder)
    assert len(data) == 12 and data.text_factors is None and len(data.captions) == 12
    # 000010.png sorts after 000009.png (numeric order, whatever the zero padding).
    assert data.images[10][0, 0, 0] == 100
    np.testing.assert_allclose(data.factors["latent_1"], 0.5 * np.arange(12))
    named = load_causal3dident(folder, factor_names=("shape", "hue"))
    assert set(named.factors) == {"shape", "hue"}
    with pytest.raises(DatasetError, match=r"factor_names=\('shape',\) is invalid .* it has 2 columns"):
        load_causal3dident(folder, factor_names=("shape",))


def test_3dident_errors(tmp_path):
    with pytest.raises(DatasetMissingError, match="3DIdent directory .*nowhere not found"):
        load_causal3dident(tmp_path / "nowhere")
    with pytest.raises(DatasetMissingError, match="has no images/ folder; expected images/"):
        load_causal3dident(tmp_path)

    folder = write_m3di(tmp_path / "no_captions", captions="")
    with pytest.raises(DatasetMissingError, match="no captions: expected text/text_raw.txt or captions.txt"):
        load_causal3dident(folder)
    assert load_causal3dident(folder, require_captions=False).captions is None

    folder = write_m3di(tmp_path / "no_latents")
    for name in ("latents_image.csv", "latents_text.csv"):
        (folder / name).unlink()
    with pytest.raises(DatasetMissingError, match="has no latents: expected latents_image.csv"):
        load_causal3dident(folder)

    folder = write_m3di(tmp_path / "mismatch", n=3)
    (folder / "images" / "000002.png").unlink()
    with pytest.raises(DatasetError, match=r"counts differ \(images/ \(.png files\) 2, latents_image.csv 3, "
                                           r"latents_text.csv 3, text/text_raw.txt 3\)"):
        load_causal3dident(folder)

    folder = write_m3di(tmp_path / "short_caption", n=3)
    (folder / "text" / "text_raw.txt").write_text("one\ntwo\n")
    with pytest.raises(DatasetError, match="text/text_raw.txt 2"):
        load_causal3dident(folder)

    folder = write_m3di(tmp_path / "bad_csv", n=3)
    with open(folder / "latents_image.csv", "a") as f:
        f.write("1,2\n")
    with pytest.raises(DatasetError, match="latents_image.csv line 5 has 2 fields; the header has 3"):
        load_causal3dident(folder)

    folder = write_m3di(tmp_path / "bad_png", n=3)
    (folder / "images" / "000000.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="image .*000000.png cannot be read as PNG"):
        load_causal3dident(folder)

    folder = write_m3di(tmp_path / "empty", n=1)
    (folder / "images" / "000000.png").unlink()
    with pytest.raises(DatasetError, match="images folder .* has no .png files"):
        load_causal3dident(folder)
