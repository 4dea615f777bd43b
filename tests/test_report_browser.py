"""The HTML report in a real browser: headless Chromium lays the page out, the plots have a
size and drawn paths, a screenshot of them is not blank, and every link resolves.

Skipped (saying why) without a ``chromium`` or ``chromium-browser`` binary;
``ci/setup-host.sh`` installs one.  Each Chromium run has a deadline and its own profile
directory (parallel workers must not share one).
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from harness.report import Outputs, build
from harness.report.synthetic import synthesise, write_campaigns

DEADLINE = 90.0          # seconds per Chromium run: a cold start on a loaded 2-core host
# Debian's package, Ubuntu's name for it, and Google's build (GitHub's runners have it).
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

#: Measures each plot after layout and leaves the numbers in the DOM for --dump-dom.
PROBE = """<script>
const plots = [...document.querySelectorAll('figure svg')].map(svg => {
  const box = svg.getBoundingClientRect();
  const drawn = [...svg.querySelectorAll('path')].filter(p => {
    const b = p.getBBox(); return b.width > 0 || b.height > 0; }).length;
  return {width: box.width, height: box.height, drawn: drawn};
});
document.body.setAttribute('data-probe', JSON.stringify(plots));
</script>"""
#: Hides everything but the plots, so the screenshot's viewport shows them.
PLOTS_ONLY = ("<style>body > *:not(#plots):not(figure) { display: none !important; }"
              "h2#plots { display: block !important; }</style>")


def browser() -> str:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    pytest.skip(f"no {' or '.join(BROWSERS)} binary on PATH: install it "
                "(apt-get install chromium; ci/setup-host.sh does) to run this test")


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.glob('chromium-profile-*')))}"
    argv = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            f"--user-data-dir={profile}", *args]
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=DEADLINE,
                              check=True)
    except subprocess.TimeoutExpired:
        pytest.fail(f"chromium did not finish within {DEADLINE:.0f} s: {' '.join(argv)}")


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(str(a["id"]))
        if tag == "a" and a.get("href"):
            self.hrefs.append(str(a["href"]))


@pytest.fixture
def report(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    write_campaigns(results, synthesise(900, nights=3))
    out = tmp_path / "site" / "report.html"
    build([results], Outputs(html=out), baseline=[results],
          known_file=Path(__file__).parent.parent / "ci" / "known-failures.toml")
    return out


def probe_page(report: Path, extra: str) -> Path:
    """A copy beside the report (relative links stay valid) with ``extra`` in its body."""
    page = report.with_name("probe.html")
    page.write_text(report.read_text().replace("</body>", extra + "</body>"))
    return page


def test_the_plots_render_with_a_size_and_drawn_paths(report: Path, tmp_path: Path) -> None:
    dom = chromium(tmp_path, "--dump-dom", probe_page(report, PROBE).as_uri()).stdout
    found = re.search(r'data-probe="([^"]*)"', dom)
    assert found, "the probe did not run: no data-probe attribute in the DOM"
    plots = json.loads(html.unescape(found.group(1)))
    assert len(plots) >= 3, plots            # rates, phases, trends (3 nights), staleness
    for plot in plots:
        assert plot["width"] > 100 and plot["height"] > 100, plots
        assert plot["drawn"] > 10, plots


def test_a_screenshot_of_the_plots_is_not_blank(report: Path, tmp_path: Path) -> None:
    image = pytest.importorskip("matplotlib.image")
    png = tmp_path / "plots.png"     # kept in the test's directory for a look
    chromium(tmp_path, f"--screenshot={png}", "--window-size=1400,1000", "--hide-scrollbars",
             probe_page(report, PLOTS_ONLY).as_uri())
    pixels = image.imread(str(png))[..., :3]
    colours = {tuple(p) for p in pixels[::7, ::7].reshape(-1, 3).round(2).tolist()}
    ink = (pixels.mean(axis=2) < 0.9).mean()
    assert len(colours) > 20 and ink > 0.02, (len(colours), ink)


def test_every_link_resolves(report: Path, tmp_path: Path) -> None:
    dom = chromium(tmp_path, "--dump-dom", report.as_uri()).stdout
    links = Links()
    links.feed(dom)
    evidence = [h for h in links.hrefs if not h.startswith("#")]
    assert evidence, "the synthetic night has failures with evidence: expected links"
    for href in links.hrefs:
        parts = urlsplit(href)
        if href.startswith("#"):
            assert parts.fragment in links.ids, href
        else:
            assert not parts.scheme and not parts.netloc, f"not relative: {href}"
            assert (report.parent / unquote(parts.path)).exists(), href
