"""Snakemake's HTML report (``snakemake --report report.html``) as a reader's browser renders it: headless
Chromium opens a copy of the report with a script appended that drives the report's own app the way its
links do, and hands back what was rendered. Used by tests/test_report_html.py; run as a script it takes
the README's screenshot:

    .venv/bin/python tests/report_browser.py report.html docs/report_screenshot.png
"""
from __future__ import annotations

import html
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
         "--virtual-time-budget=30000")  # React renders after the load event: let its timers run

# Waits for the app, then for every category and subcategory the result list, for every result what the
# content pane shows (the image, or the iframe of an HTML page) and its info panel with the caption.
PROBE = r"""
function medtlProbe() {
  if (typeof app === "undefined" || !document.querySelector("nav")) { setTimeout(medtlProbe, 50); return; }
  const probe = {error: null, start: document.querySelector("#app").innerText, menu: "", categories: {},
                 members: categories, results: {}};
  try {
    const flush = (f) => ReactDOM.flushSync(f);
    const nav = () => document.querySelector("nav").innerText;
    const home = () => flush(() => app.setView({navbarMode: "menu"}));
    probe.menu = nav();
    for (const cat of Object.keys(categories)) {
      probe.categories[cat] = {};
      for (const sub of Object.keys(categories[cat])) {
        home();  // as a reader clicks: menu, category, subcategory (the list is built when it appears)
        flush(() => app.showCategory(cat));
        flush(() => app.setView({navbarMode: "subcategory", category: cat, subcategory: sub}));
        probe.categories[cat][sub] = nav();
      }
    }
    for (const path of Object.keys(results)) {
      const entry = results[path];
      const kind = entry.mime_type.startsWith("image/") ? "img" : entry.mime_type === "text/html" ? "html" : null;
      let shown = null;
      if (kind) {
        flush(() => app.setView({content: kind, contentPath: entry.data_uri, resultPath: path}));
        const el = document.querySelector("#app div.grow " + (kind === "img" ? "img" : "iframe"));  // content pane
        shown = el ? {tag: el.tagName.toLowerCase(), src: el.getAttribute("src"),
                      is_result: el.getAttribute("src") === entry.data_uri} : null;
      }
      home();
      flush(() => app.showResultInfo(path));
      probe.results[path] = {mime: entry.mime_type, labels: entry.labels, caption_html: entry.caption, shown: shown,
                             info: nav()};
    }
  } catch (err) {
    probe.error = String(err && err.stack || err);
  }
  const pre = document.createElement("pre");
  pre.id = "medtl-probe";
  pre.textContent = JSON.stringify(probe);
  document.body.appendChild(pre);
}
window.addEventListener("load", medtlProbe);
"""

# The README's view: a category's subcategory list, one result's caption, its table or figure beside it.
VIEW = r"""
function medtlView() {
  if (typeof app === "undefined" || !document.querySelector("nav")) { setTimeout(medtlView, 50); return; }
  const path = Object.keys(results).find((p) => new RegExp(%(result)s).test(p));
  const entry = results[path];
  app.setView({navbarMode: "resultinfo", category: %(category)s, subcategory: %(subcategory)s,
               content: entry.mime_type === "text/html" ? "html" : "img", contentPath: entry.data_uri,
               resultPath: path});
}
window.addEventListener("load", medtlView);
"""


def find_chromium() -> str | None:
    """$CHROMIUM if set (None when it is not an executable), else the first of CHROMIUM_NAMES on the PATH."""
    given = os.environ.get("CHROMIUM")
    if given:
        return shutil.which(given)
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _with_script(report: Path, script: str, out: Path) -> Path:
    text = report.read_text()
    end = text.rindex("</body>")
    out.write_text(text[:end] + "<script>\n" + script + "\n</script>\n" + text[end:])
    return out


def _run(chromium: str, args: list[str], timeout: int = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": os.environ.get("HOME") or "/tmp"}  # Chromium wants a profile folder
    return subprocess.run([chromium, *FLAGS, *args], capture_output=True, text=True, timeout=timeout, env=env)


def probe(report: Path, workdir: Path, chromium: str) -> dict:
    """What Chromium rendered for every category, subcategory and result of ``report`` (see PROBE)."""
    page = _with_script(report, PROBE, workdir / "probe.html")
    proc = _run(chromium, ["--dump-dom", page.as_uri()])
    dom = proc.stdout
    marker = '<pre id="medtl-probe">'
    start = dom.rfind(marker)  # the last one: the script's own text mentions it too
    if proc.returncode != 0 or start < 0 or dom.find("</pre>", start) < 0:
        raise RuntimeError(f"Chromium rendered no probe (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(html.unescape(dom[start + len(marker):dom.index("</pre>", start)]))


def screenshot(report: Path, out: Path, chromium: str, category: str, subcategory: str, result: str,
               size: tuple[int, int] = (2000, 800)) -> Path:
    """A PNG of the report showing the first result whose path matches the regular expression ``result``,
    with its caption, in ``category`` / ``subcategory``."""
    script = VIEW % {"result": json.dumps(result), "category": json.dumps(category),
                     "subcategory": json.dumps(subcategory)}
    page = _with_script(report, script, out.with_name(out.stem + "_view.html"))
    try:
        proc = _run(chromium, [f"--screenshot={out}", f"--window-size={size[0]},{size[1]}", page.as_uri()])
    finally:
        page.unlink()
    if proc.returncode != 0 or not out.is_file():
        raise RuntimeError(f"Chromium took no screenshot (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    from PIL import Image

    image = Image.open(out).convert("RGB")
    # headless Chromium's page is shorter than its window: cut the blank strip under the report's panels
    left = [image.getpixel((2, y)) for y in range(image.height)]
    bottom = max((y for y, px in enumerate(left) if px != (255, 255, 255)), default=image.height - 1) + 1
    image.crop((0, 0, image.width, bottom)).quantize(colors=128).save(out, optimize=True)  # small, for the README
    return out


if __name__ == "__main__":
    report_html, png = (Path(a).resolve() for a in sys.argv[1:3])
    browser = find_chromium()
    if browser is None:
        sys.exit("no Chromium found (Debian: apt-get install chromium)")
    screenshot(report_html, png, browser, category="Classification · study 1 (strategies)",  # a dataset's scores
               subcategory="Per dataset", result=r"classification/tables/[^/]+(?<!_intervals)\.html$")
    print(png)
