"""The report as a person sees it: opened in headless Chromium, every picture decodes, and the
figures on the page are the figures in report.json."""

import json
import re

import numpy as np
from browser import dump_dom
from PIL import Image

from worldloom.pipeline.report import Report


def _write_media(tmp_path):
    png = tmp_path / "grid.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 48, 3), dtype=np.uint8)).save(png)
    gif = tmp_path / "rollout.gif"
    frames = [Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)) for i in range(4)]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=50, loop=0)
    return png, gif


def test_report_opens_offline_with_every_picture_and_matching_figures(tmp_path):
    png, gif = _write_media(tmp_path)
    r = Report("test report")
    r.data = {"idm": {"macro_f1": 0.8731}, "wm": {"psnr": 27.25}}
    s = r.section("Figures", "numbers from the JSON")
    s.table(["metric", "value"], [["macro F1", 0.8731], ["PSNR", 27.25]],
            keys=[["", "idm.macro_f1"], ["", "wm.psnr"]])
    s.image(png, "grid")
    s.video(gif, "rollout")
    html_path = r.write(tmp_path / "out")

    page = html_path.read_text()
    assert "http://" not in page and "https://" not in page  # nothing fetched from a CDN
    dom = dump_dom(html_path)
    check = re.search(r'<p id="media-check"([^>]*)>', dom)
    assert check, "the page's load handler did not run"
    attrs = dict(re.findall(r'data-([a-z-]+)="(\d+)"', check.group(1)))
    assert attrs == {"images": "2", "videos": "0", "bad-images": "0", "bad-videos": "0"}

    data = json.loads((tmp_path / "out" / "report.json").read_text())
    cells = dict(re.findall(r'<td data-key="([^"]+)">([^<]*)</td>', dom))
    assert set(cells) == {"idm.macro_f1", "wm.psnr"}
    for key, shown in cells.items():
        value = data
        for part in key.split("."):
            value = value[part]
        assert abs(float(shown) - value) <= 1e-3 * abs(value)
    assert "![grid](../grid.png)" in (tmp_path / "out" / "report.md").read_text()


def test_a_broken_picture_is_flagged(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    r = Report("broken")
    r.section("x").image(bad, "bad")
    dom = dump_dom(r.write(tmp_path / "out"))
    assert 'data-bad-images="1"' in dom
