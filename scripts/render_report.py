"""Write the HTML report of a store and, where Chromium is installed, a screenshot of it rendered
offline in headless Chromium (to check its look without a desktop).

    python scripts/render_report.py --store sqlite:///edgerob.db --out report.html \
        --screenshot report.png [--targets a,b,c] [--train-time-s 120]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from edgerob.analysis.cost import Workload
from edgerob.errors import EdgerobError
from edgerob.analysis.report import write_report
from edgerob.store import DEFAULT_URL, Store


def screenshot(html: Path, png: Path, width: int = 1280, height: int = 2000) -> Path:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise EdgerobError("chromium is not installed (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                        "--disable-background-networking", "--disable-component-update",
                        "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                        f"--screenshot={png.resolve()}", f"--window-size={width},{height}",
                        html.resolve().as_uri()], check=False, capture_output=True, timeout=120)
    if not png.is_file():
        raise EdgerobError(f"chromium wrote no screenshot to {png}")
    return png


# Appended to a copy of the report (the report itself has no script): on load, write the
# section order and each image's natural width into the DOM that --dump-dom prints.
_PROBE = ("<script>window.addEventListener('load',()=>{document.body.setAttribute('data-probe',"
          "JSON.stringify({sections:[...document.querySelectorAll('h2[id]')].map(h=>h.id),"
          "images:[...document.images].map(i=>i.complete?i.naturalWidth:0)}))});</script>")


def browser_check(html: Path) -> dict:
    """Render `html` in headless Chromium and return {"sections": h2 ids in page order,
    "images": each image's naturalWidth (0: it did not load)}."""
    import html as html_mod
    import json
    import re

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise EdgerobError("chromium is not installed (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp, "probe.html")
        probe.write_text(html.read_text().replace("</body>", _PROBE + "</body>"))
        proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                               "--disable-background-networking", "--disable-component-update",
                               "--disable-sync", "--no-first-run", f"--user-data-dir={tmp}/p",
                               "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                              check=False, capture_output=True, text=True, timeout=120)
    m = re.search(r'data-probe="([^"]*)"', proc.stdout)
    if not m:
        raise EdgerobError(f"chromium did not report the page: {proc.stderr[-300:]}")
    return json.loads(html_mod.unescape(m.group(1)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default=DEFAULT_URL)
    ap.add_argument("--out", type=Path, default=Path("report.html"))
    ap.add_argument("--targets", default=None, help="comma-separated target names")
    ap.add_argument("--train-time-s", type=float, default=None)
    ap.add_argument("--screenshot", type=Path, default=None)
    ap.add_argument("--height", type=int, default=2000)
    args = ap.parse_args(argv)
    try:
        path = write_report(Store(args.store), args.out, targets=args.targets,
                            workload=Workload(), train_time_s=args.train_time_s)
        print(f"report -> {path} ({path.stat().st_size / 1024:.0f} KiB)")
        if args.screenshot:
            shot = screenshot(path, args.screenshot, height=args.height)
            print(f"screenshot -> {shot} ({shot.stat().st_size / 1024:.0f} KiB)")
    except EdgerobError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
