"""Open a report.html in headless Chromium and read it: every figure loads, nothing overflows.

    python scripts/browser_check.py multirun/quick3/report.html [--width 1280] [--screenshot shot.png]

Chromium comes from the Debian packages (`apt install chromium`). A copy of the page gets a
script that, once everything has loaded, measures what a reader would see at the window width:
figures that failed to load (naturalWidth 0), tables wider than the text column, and a page
wider than the window (a horizontal scroll bar). Prints one line per problem; exit 1 if any.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROBE = """<script>
window.addEventListener("load", () => {
  const body = document.body, width = window.innerWidth, out = {problems: [], tables: 0, images: 0};
  for (const img of document.images) {
    out.images++;
    if (!img.complete || img.naturalWidth === 0) out.problems.push("figure does not load: " + img.alt);
    else if (img.getBoundingClientRect().right > width) out.problems.push("figure overflows: " + img.alt);
  }
  for (const t of document.querySelectorAll("table")) {
    out.tables++;
    const box = t.parentElement.getBoundingClientRect();
    if (t.getBoundingClientRect().right > Math.min(width, box.right) + 1)
      out.problems.push("table wider than the page: " + (t.rows[0] ? t.rows[0].innerText.slice(0, 60) : ""));
  }
  if (document.documentElement.scrollWidth > width + 1)
    out.problems.push("page scrolls sideways: " + document.documentElement.scrollWidth + " px > " + width);
  const pre = document.createElement("pre"); pre.id = "imbadv-probe";
  pre.textContent = JSON.stringify(out); body.appendChild(pre);
});
</script>"""


def check(page: Path, width: int, screenshot: Path | None) -> dict:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("browser_check: chromium not found (apt install chromium)")
    with tempfile.TemporaryDirectory() as tmp:
        page = page.resolve()
        probe = page.parent / f".probe-{page.name}"  # beside the page: relative figures resolve
        probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
        flags = [
            browser,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp}",
        ]
        flags += [f"--window-size={width},1000", "--virtual-time-budget=10000"]
        try:
            dom = subprocess.run(
                [*flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120
            ).stdout
            if screenshot is not None:
                shot = [
                    *flags[:-2],
                    f"--window-size={width},4000",
                    f"--screenshot={screenshot.resolve()}",
                ]
                subprocess.run(
                    [*shot, "--hide-scrollbars", page.resolve().as_uri()],
                    capture_output=True,
                    timeout=120,
                )
        finally:
            probe.unlink()
    found = re.search(r'<pre id="imbadv-probe">(.*?)</pre>', dom, re.S)
    if found is None:
        sys.exit("browser_check: the page did not finish loading in Chromium")
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("page", type=Path)
    p.add_argument("--width", type=int, default=1280, help="window width in CSS pixels")
    p.add_argument("--screenshot", type=Path, default=None, help="also save a full-page PNG")
    args = p.parse_args()
    out = check(args.page, args.width, args.screenshot)
    print(f"{args.page}: {out['tables']} tables, {out['images']} figures at {args.width} px wide")
    for problem in out["problems"]:
        print(f"  {problem}")
    return 1 if out["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
