"""``convscope report``: one self-contained page, checked in a real browser when one is installed."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convscope.cli import main
from tests.data.helpers import make_imagefolder
from tests.test_cli import QUICK

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

# Put first in <head> of a copy of the page: records script errors, console errors and images that failed.
PROBE = """<script>
const seen = [];
const consoleError = console.error;
console.error = (...args) => { seen.push(args.join(" ")); consoleError(...args); };
const failed = (e) => "failed to load " + (e.target.alt || e.target.tagName);
addEventListener("error", (e) => seen.push(e.message || failed(e)), true);
addEventListener("load", () => {
  const images = [...document.images];
  const broken = images.filter((i) => !(i.complete && i.naturalWidth > 0)).map((i) => i.alt);
  document.documentElement.dataset.check = JSON.stringify({images: images.length, broken, errors: seen});
});
</script>"""


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONVSCOPE_HOME", str(root / "home"))
        folder = make_imagefolder(root / "pets", ("cat", "dog"), per_class=12, size=(16, 16), splits=("train", "test"))
        run = root / "run"
        assert main(["train", "--data", f"imagefolder:{folder}", "--out", str(run), *QUICK]) == 0
        # More than the 24 test images: the page must say how many were used, not how many were asked for.
        assert main(["report", str(run), "--trust-images", "40"]) == 0
    return run / "report.html"


def test_report_is_one_self_contained_page_with_every_section(report: Path):
    text = report.read_text()
    sources = re.findall(r'src="([^"]*)"', text)
    assert len(sources) >= 8 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "href=" not in text and "<script" not in text  # nothing fetched, nothing run
    for heading in ("Run", "Test metrics", "Training", "Errors and curves", "Most confident mistakes",
                    "Explanations", "Can the explanations be trusted?", "Configuration"):  # fmt: skip
        assert f"<h2>{html.escape(heading)}</h2>" in text
    for alt in ("loss and accuracy", "learning-rate schedule", "confusion matrix", "ROC", "PR", "explanations",
                "feature maps", "deletion and insertion curves"):  # fmt: skip
        assert f'alt="{alt}"' in text
    evaluation = json.loads((report.parent / "eval.json").read_text())
    assert f"{evaluation['balanced_error_rate']:.4f}" in text
    assert "attention does not apply" in text
    for method in ("saliency", "guided-backprop", "gradcam", "integrated-gradients", "random"):
        assert f'<td class="text">{method}</td>' in text
    rows = re.findall(r'<td class="text">([a-z-]+)</td>.*?<td class="(pass|fail|text)">([A-Za-z ]+)</td>'
                      r'<td class="text">([^<]*)</td>', text)  # fmt: skip
    verdicts = {method: (css, label, reason) for method, css, label, reason in rows}
    assert verdicts["random"] == ("text", "reference", "uniform noise maps: the chance level each method must beat")
    for method in ("saliency", "guided-backprop", "gradcam", "integrated-gradients"):
        css, label, reason = verdicts[method]
        assert css.upper() == label and reason  # every verdict says why
        assert reason.startswith("beats random maps on") == (label == "PASS")
    assert "PASS only if the method beats the random maps of the same images" in text
    # Random pictures of no object: no mask to point at, and the count is the split's 24, not the 40 asked for.
    assert text.count('<td class="text">needs object masks</td>') == 5
    assert "24 test images: the first 24 images of the run&#x27;s test split (all of it: 40 were asked for)" in text


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium: `make setup` installs Debian's chromium when run as root")
def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path):
    probed = tmp_path / "probed.html"
    probed.write_text(report.read_text().replace("<head>", "<head>" + PROBE, 1))
    browser = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000"]
    dom = subprocess.run([*browser, "--dump-dom", probed.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'data-check="([^"]*)"', dom.stdout)
    assert found, dom.stderr[-2000:]
    check = json.loads(html.unescape(found.group(1)))
    assert check["images"] >= 8 and check["broken"] == [] and check["errors"] == []

    screenshot = tmp_path / "report.png"
    shot = subprocess.run([*browser, "--hide-scrollbars", "--window-size=1200,3000", f"--screenshot={screenshot}",
                           report.as_uri()], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert screenshot.is_file(), shot.stderr[-2000:]
    pixels = np.asarray(Image.open(screenshot).convert("L"))
    assert pixels.shape == (3000, 1200) and pixels.std() > 10  # drawn, not a blank page
    print(f"screenshot: {screenshot}")
