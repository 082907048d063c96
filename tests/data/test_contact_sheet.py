"""The contact sheet of scenes (docs/scenes_contact_sheet.png, the image–text notebook)."""

import pytest

from mmjax.data.contact_sheet import contact_sheet
from mmjax.data.scenes import SceneConfig


def test_contact_sheet_writes_a_png(tmp_path):
    path = contact_sheet(tmp_path / "sheet.png", n=3, cfg=SceneConfig(image_size=32),
                         selected=("colour", "size"), perturbed=("size",), columns=2)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000


@pytest.mark.parametrize("kw, field", [(dict(n=0), "n=0"), (dict(columns=0), "columns=0")])
def test_contact_sheet_rejects_bad_sizes(tmp_path, kw, field):
    with pytest.raises(ValueError, match=field):
        contact_sheet(tmp_path / "sheet.png", **kw)
