"""Check an editbench HTML report as a person sees it: render it in headless Chromium and
assert on the rendered page.

    python scripts/check_report_render.py REPORT.html [--screenshot shot.png] [--expect-text TEXT ...] [--run RUN_DIR]
    python scripts/check_report_render.py GALLERY.html --gallery [--screenshot shot.png] [--expect-text TEXT ...]

Checks, in a window ``WINDOW`` wide: the page has tables and images, every image decoded,
no figure is wider than the page (shown shrunk, or running off it), no table is cut (wider
than the page and not in a box that scrolls), the page holds no script of its own (so nothing
from a prompt ran), and each ``--expect-text`` (e.g. a prompt holding ``<script>``) is shown
as visible text. A page states how many figures it embeds (``<meta name="editbench-figures">``;
a table-only page such as PIE-Bench's says 0) and must show that many. With ``--run``, the
figures the report of RUN_DIR draws are checked too, on their matplotlib Figures: no two texts
(titles, tick labels, point names, legend entries) overlap and no legend covers data or text;
this part needs no browser.

With ``--gallery`` the page is a gallery (``editbench report RUN --gallery PAGE``), which has a
script of its own: the check uses its controls as a person would and asserts on what is shown
then: sorting by the first metric ascending and descending orders the cards by the value shown
on the sorted row's tile (no value last) and changes their order; filtering by a method leaves
only that method's tiles; filtering by an edit type only that type's cards; the first card's
images decode; no run string became markup; the page holds exactly its own two scripts (data
and code). It also prints how long the page took to load and draw.

Needs Debian's ``chromium`` (``apt-get install chromium``); exits 0 when every check passes, 1
otherwise, 2 when no browser is found.
"""

import argparse
import html as html_lib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
WINDOW = (1400, 4000)  # a laptop-sized browser window, and the screenshot's size
# Appended to a copy of the report, never to the report itself: after load it records what
# rendered into a <pre> that --dump-dom prints.
PROBE = """<script>
window.addEventListener("load", () => {
  const imgs = [...document.images];
  const text = document.body.innerText;
  const out = {
    tables: document.querySelectorAll("table").length,
    table_rows: document.querySelectorAll("tbody tr").length,
    images: imgs.length,
    declared_figures: (document.querySelector('meta[name="editbench-figures"]') || {}).content ?? null,
    images_decoded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
    scripts: document.scripts.length,
    expected_text_found: EXPECTED.map(t => text.includes(t)),
    caveat: document.querySelectorAll(".caveat").length,
    page_width: document.documentElement.clientWidth,
    // a figure is too wide when the page shrinks it to fit, or when it runs off the page
    wide_images: imgs.map((img, i) => {
      const box = img.getBoundingClientRect();
      return {index: i, natural: img.naturalWidth, shown: Math.round(box.width), right: Math.round(box.right)};
    }).filter(f => f.natural > f.shown + 1 || f.right > document.documentElement.clientWidth + 1),
    // a table is cut when it reaches past the page (or a clipping box) and no box around it scrolls
    cut_tables: [...document.querySelectorAll("table")].map((table, i) => {
      const box = table.getBoundingClientRect();
      let limit = document.documentElement.clientWidth;
      for (let el = table.parentElement; el && el !== document.documentElement; el = el.parentElement) {
        const overflow = getComputedStyle(el).overflowX;
        if (overflow === "auto" || overflow === "scroll") return null;
        if (overflow === "hidden" || overflow === "clip") limit = Math.min(limit, el.getBoundingClientRect().right);
      }
      return box.right > limit + 1 ? {index: i, width: Math.round(box.width), visible: Math.round(limit - box.left)} : null;
    }).filter(t => t),
  };
  const pre = document.createElement("pre");
  pre.id = "render-probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


# The gallery's probe: after load it records what is shown, works the controls, and records again.
GALLERY_PROBE = """<script>
window.addEventListener("load", () => {
  const $ = (id) => document.getElementById(id);
  const visible = (e) => { const b = e.getBoundingClientRect(); return b.width > 0 && b.height > 0; };
  const metricBox = $("sort-metric");
  const metric = metricBox && metricBox.options.length > 1 ? metricBox.options[1] : null;
  const metricName = metric ? metric.textContent.replace(/ [↑↓]$/, "") : null;
  function shown() {
    const cards = [...document.querySelectorAll(".card")].filter(visible);
    const tiles = cards.flatMap((c) => [...c.querySelectorAll(".tile[data-method]")].filter(visible));
    return {
      cards: cards.length,
      samples: cards.map((c) => c.querySelector("h2").textContent),
      methods: [...new Set(tiles.map((t) => t.dataset.method))],
      edit_types: [...new Set(cards.map((c) => c.dataset.editType))],
      sort_values: cards.map((c) => {
        const td = c.querySelector(`.tile.sorted td[data-metric="${metricName}"]`);
        if (!td) return "no sorted tile";
        const v = td.textContent === "inf" ? 1e308 : td.textContent === "-inf" ? -1e308 : parseFloat(td.textContent);
        return Number.isNaN(v) ? null : v;
      }),
    };
  }
  function set(id, value) {
    const box = $(id);
    if (!box) return false;
    box.value = value;
    box.dispatchEvent(new Event("change"));
    return true;
  }
  const last = (id) => ($(id) && $(id).options.length > 1 ? $(id).options[$(id).options.length - 1].value : null);
  const nav = performance.getEntriesByType("navigation")[0];
  const drawn = performance.getEntriesByName("gallery-drawn")[0];
  const text = document.body.innerText;
  const out = {
    scripts: document.scripts.length,
    title: document.title,
    injected: document.querySelectorAll("#cards script, #cards b, #cards i, #cards img[src='q']").length,
    expected_text_found: EXPECTED.map((t) => text.includes(t)),
    timing_ms: {dom_content_loaded: nav && Math.round(nav.domContentLoadedEventEnd), drawn: drawn && Math.round(drawn.startTime),
                load: Math.round(performance.now())},
    metric: metricName,
    start: shown(),
  };
  if (metric) {
    set("sort-metric", metric.value);
    set("sort-order", "asc");
    out.ascending = shown();
    set("sort-order", "desc");
    out.descending = shown();
    set("sort-order", "asc");
    set("sort-metric", "");  // the sorted row's tiles stay in view while sorting: filter unsorted
  }
  out.method = last("filter-method");
  if (out.method !== null) { set("filter-method", out.method); out.by_method = shown(); set("filter-method", ""); }
  out.edit_type = last("filter-edit_type");
  if (out.edit_type !== null) { set("filter-edit_type", out.edit_type); out.by_edit_type = shown(); set("filter-edit_type", ""); }
  setTimeout(() => {  // lazy images in view have loaded by now
    const first = [...(document.querySelector(".card") || document.body).querySelectorAll("img")];
    out.first_card_images = first.length;
    out.first_card_decoded = first.filter((i) => i.complete && i.naturalWidth > 0).length;
    const pre = document.createElement("pre");
    pre.id = "render-probe";
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  }, 1000);
});
</script>"""
GALLERY_SCRIPTS = 2  # the gallery's own: its data (JSON) and its code


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def _chromium(browser: str, profile: str, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--hide-scrollbars",
             f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--window-size={},{}".format(*WINDOW)]  # fmt: skip
    return subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=120)


def render(html_path: Path, expect_text: list[str] = (), screenshot: Path | None = None, probe: str = PROBE) -> dict:
    """Render ``html_path`` in headless Chromium; return what the probe (``PROBE``, or
    ``GALLERY_PROBE`` for a gallery) saw on the page."""
    browser = find_browser()
    if browser is None:
        raise FileNotFoundError("no Chromium found (tried: " + ", ".join(BROWSERS) + "); apt-get install chromium")
    html = Path(html_path).read_text(encoding="utf-8")
    probe = probe.replace("EXPECTED", json.dumps(list(expect_text)).replace("</", "<\\/"))  # no "</script>" inside
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "probed.html"
        head, _, tail = html.rpartition("</body>")
        # the copy finds the files beside the page (a gallery's images) where the page does
        head = head.replace("<head>", f'<head><base href="{Path(html_path).resolve().parent.as_uri()}/">', 1)
        page.write_text(head + probe + "</body>" + tail, encoding="utf-8")
        done = _chromium(browser, str(Path(tmp) / "profile-dom"), "--dump-dom", page.as_uri())
        if screenshot is not None:
            shot = _chromium(
                browser, str(Path(tmp) / "profile-shot"), f"--screenshot={Path(screenshot).resolve()}",
                Path(html_path).resolve().as_uri(),
            )  # fmt: skip
            if not Path(screenshot).is_file():
                raise RuntimeError(f"chromium wrote no screenshot: {shot.stderr[-2000:]}")
    found = re.search(r'<pre id="render-probe">(.*?)</pre>', done.stdout, re.S)
    if not found:
        raise RuntimeError(f"the probe did not run; chromium said: {done.stderr[-2000:]}")
    seen = json.loads(html_lib.unescape(found.group(1)))
    seen["scripts"] -= 1  # the probe itself
    return seen


def problems(seen: dict, expect_text: list[str] = ()) -> list[str]:
    """What is wrong with a rendered report (empty when it looks right)."""
    out = []
    if seen["tables"] < 1 or seen["table_rows"] < 1:
        out.append(f"no table rows rendered ({seen['tables']} tables)")
    declared = seen.get("declared_figures")
    if declared is None and seen["images"] < 1:
        out.append("no images on the page")
    elif declared is not None and seen["images"] != int(declared):
        out.append(f"{seen['images']} images on the page, which declares {declared} figures")
    if seen["images_decoded"] != seen["images"]:
        out.append(f"only {seen['images_decoded']} of {seen['images']} images decoded")
    for f in seen["wide_images"]:
        out.append(f"figure {f['index'] + 1} is {f['natural']} px wide, wider than the page: shown {f['shown']} px "
                   f"wide, its right edge at {f['right']} px of {seen['page_width']}")  # fmt: skip
    for t in seen["cut_tables"]:
        out.append(f"table {t['index'] + 1} is cut: {t['width']} px wide, {t['visible']} px visible, "
                   "and no box around it scrolls")  # fmt: skip
    if seen["scripts"]:
        out.append(f"the report holds {seen['scripts']} script element(s); it must hold none")
    out += [f"text not shown: {t!r}" for t, ok in zip(expect_text, seen["expected_text_found"]) if not ok]
    return out


def _ordered(values: list, descending: bool) -> bool:
    """Values in order, those without a value (None) last."""
    numbers = [v for v in values if v is not None]
    if values[: len(numbers)] != numbers or any(isinstance(v, str) for v in values):
        return False
    return numbers == sorted(numbers, reverse=descending)


def gallery_problems(seen: dict, expect_text: list[str] = ()) -> list[str]:
    """What is wrong with a rendered gallery, after its controls were used (empty when it works)."""
    out = []
    start = seen["start"]
    if start["cards"] < 1:
        out.append("no sample card shown")
    if seen.get("first_card_decoded") != seen.get("first_card_images"):
        out.append(f"only {seen.get('first_card_decoded')} of {seen.get('first_card_images')} images of the first card decoded")
    if "ascending" in seen:
        up, down = seen["ascending"], seen["descending"]
        if not _ordered(up["sort_values"], descending=False):
            out.append(f"sorting by {seen['metric']} ascending shows {up['sort_values']}")
        if not _ordered(down["sort_values"], descending=True):
            out.append(f"sorting by {seen['metric']} descending shows {down['sort_values']}")
        if len({v for v in up["sort_values"] if v is not None}) > 1 and up["samples"] == down["samples"]:
            out.append(f"sorting by {seen['metric']} ascending and descending shows the same order")
    if "by_method" in seen:
        if seen["by_method"]["methods"] != [seen["method"]]:
            out.append(f"filtering by method {seen['method']} shows tiles of {seen['by_method']['methods']}")
        if len(start["methods"]) > 1 and seen["by_method"]["methods"] == start["methods"]:
            out.append(f"filtering by method {seen['method']} changed nothing")
    if "by_edit_type" in seen and seen["by_edit_type"]["edit_types"] != [seen["edit_type"]]:
        out.append(f"filtering by edit type {seen['edit_type']} shows cards of {seen['by_edit_type']['edit_types']}")
    if seen["injected"]:
        out.append(f"{seen['injected']} element(s) made from run strings (a prompt became markup)")
    if seen["scripts"] != GALLERY_SCRIPTS:
        out.append(f"the gallery holds {seen['scripts']} script elements; it must hold its own {GALLERY_SCRIPTS}")
    out += [f"text not shown: {t!r}" for t, ok in zip(expect_text, seen["expected_text_found"]) if not ok]
    return out


def figure_problems(run_dir, n_grid: int = 3) -> list[str]:
    """Overlapping texts and covering legends on every figure the report of ``run_dir`` draws."""
    from bench.reporting.plots import figure_overlaps
    from bench.reporting.report import build_report

    report = build_report(run_dir, n_grid=n_grid, keep_figures=True)
    return [f"figure {fig.get_suptitle()!r}: {o}" for fig in report.figures for o in figure_overlaps(fig)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html", type=Path)
    parser.add_argument("--screenshot", type=Path, help="also save a PNG screenshot of the page here")
    parser.add_argument("--expect-text", action="append", default=[], help="text the page must show (repeatable)")
    parser.add_argument("--run", type=Path, help="also check the figures of this run's report for overlapping text")
    parser.add_argument("--gallery", action="store_true", help="the page is a gallery: use its controls and check them")
    args = parser.parse_args(argv)
    overlaps = figure_problems(args.run) if args.run else []
    for o in overlaps:
        print(f"FAIL: {o}", file=sys.stderr)
    if find_browser() is None:
        print("no Chromium found; install it with: apt-get install chromium", file=sys.stderr)
        return 2
    seen = render(args.html, args.expect_text, args.screenshot, GALLERY_PROBE if args.gallery else PROBE)
    print(json.dumps(seen))
    wrong = (gallery_problems if args.gallery else problems)(seen, args.expect_text)
    for w in wrong:
        print(f"FAIL: {w}", file=sys.stderr)
    return 1 if wrong or overlaps else 0


if __name__ == "__main__":
    sys.exit(main())
