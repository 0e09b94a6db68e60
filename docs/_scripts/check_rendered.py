"""Check the built HTML docs in a real browser: math rendered, nothing remote.

    python docs/_scripts/check_rendered.py [docs/_build/html] [--screenshots DIR]

Run after ``sphinx-build -b html``.  It checks

* every page (HTML and the CSS under ``_static``): no script, stylesheet or
  other resource is loaded from a remote URL (http, https or ``//host``), and
  every page with math loads the MathJax that the build copied into
  ``_static/mathjax``;
* every page with math, loaded from disk by headless Chromium with name
  resolution switched off (so only local files can load), the DOM after
  MathJax ran (``--dump-dom``): each formula of the page (Sphinx's
  ``span.math`` / ``div.math``) holds MathJax output (``mjx-container``), no
  formula is a MathJax error (``mjx-merror``), no raw TeX delimiter
  (``\\(``, ``\\[``) is left in the text, and MathJax loaded nothing remote.

Without Chromium (``chromium``, ``chromium-browser`` or ``google-chrome`` on
PATH, or ``$CHROMIUM``) the static checks still run and the browser part is
skipped with the reason printed.  ``--screenshots DIR`` also writes
1280-pixel-wide screenshots of math.html and benchmarks.html there.  Exit
status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Nothing resolves: a page that needs the network fails here, offline.
    "--host-resolver-rules=MAP * ~NOTFOUND",
]
REMOTE = re.compile(r"^\s*(https?:)?//", re.IGNORECASE)
CSS_REMOTE = re.compile(r"""(url\(\s*['"]?|@import\s+['"])\s*(https?:)?//""", re.IGNORECASE)
RAW_TEX = re.compile(r"\\[(\[]")
VOID = {
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
    "source", "track", "wbr",
}  # fmt: skip
NO_TEXT = {"script", "style", "pre", "code", "textarea", "noscript", "template"}
MATHJAX_SCRIPT = "_static/mathjax/tex-chtml.js"


class Page(HTMLParser):
    """What one HTML document loads, its formulas, and the text outside code."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.resources: list[tuple[str, str]] = []  # (element, URL) of script, link, img, ...
        self.formulas = 0  # Sphinx's span.math / div.math
        self.rendered = 0  # ... that hold an mjx-container
        self.errors = 0  # mjx-merror: TeX that MathJax could not parse
        self.raw_tex: list[str] = []  # text with a TeX delimiter left in it
        self._stack: list[tuple[str, bool]] = []  # (tag, is a formula)
        self._formula_has_output: list[bool] = []
        self._no_text = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in ("script", "img", "iframe", "source", "video", "audio", "embed") and a.get("src"):
            self.resources.append((tag, a["src"]))
        if tag == "link" and a.get("href"):
            rel = (a.get("rel") or "").lower()
            if rel not in ("canonical", "alternate", "search", "index", "next", "prev", "author"):
                self.resources.append((f"link rel={rel}", a["href"]))
        if tag == "mjx-container" and self._formula_has_output:
            self._formula_has_output[-1] = True
        if tag == "mjx-merror":
            self.errors += 1
        if tag in VOID:
            return
        classes = (a.get("class") or "").split()
        is_formula = tag in ("span", "div") and "math" in classes and "notranslate" in classes
        if is_formula:
            self.formulas += 1
            self._formula_has_output.append(False)
        if tag in NO_TEXT:
            self._no_text += 1
        self._stack.append((tag, is_formula))

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID or not any(t == tag for t, _ in self._stack):
            return
        while self._stack:  # close up to the matching start tag
            t, is_formula = self._stack.pop()
            if t in NO_TEXT:
                self._no_text -= 1
            if is_formula:
                self.rendered += self._formula_has_output.pop()
            if t == tag:
                break

    def handle_data(self, data: str) -> None:
        if not self._no_text and RAW_TEX.search(data):
            self.raw_tex.append(" ".join(data.split())[:80])


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    return page


def find_chromium() -> str | None:
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


def chromium(binary: str, args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("build", nargs="?", default="docs/_build/html", type=Path)
    parser.add_argument("--screenshots", type=Path, help="write PNGs of two pages here")
    args = parser.parse_args(argv)
    build = args.build.resolve()
    pages = sorted(build.rglob("*.html"))
    pages = [p for p in pages if "_static" not in p.relative_to(build).parts]
    if not pages:
        print(f"check_rendered: no HTML pages under {build}: build the docs first")
        return 1
    failures: list[str] = []

    # Static: what each page and each stylesheet asks for.
    math_pages: dict[Path, int] = {}
    for path in pages:
        rel = path.relative_to(build).as_posix()
        page = parse(path.read_text(encoding="utf-8"))
        failures += [
            f"{rel}: remote <{e}> {url}" for e, url in page.resources if REMOTE.search(url)
        ]
        if page.formulas:
            math_pages[path] = page.formulas
            scripts = [url for e, url in page.resources if e == "script"]
            if not any(url.split("?")[0].endswith(MATHJAX_SCRIPT) for url in scripts):
                failures.append(f"{rel}: {page.formulas} formulas but no local {MATHJAX_SCRIPT}")
    if not (build / MATHJAX_SCRIPT).is_file():
        failures.append(f"{MATHJAX_SCRIPT} missing from the build")
    for css in sorted((build / "_static").rglob("*.css")):
        for line_no, line in enumerate(css.read_text(encoding="utf-8").splitlines(), 1):
            if CSS_REMOTE.search(line):
                failures.append(f"{css.relative_to(build)}:{line_no}: remote url() or @import")
    n_formulas = sum(math_pages.values())
    print(f"check_rendered: {len(pages)} pages, {n_formulas} formulas on {len(math_pages)} of them")

    # In the browser: what MathJax made of the formulas.
    binary = find_chromium()
    checked = "every formula rendered in Chromium"
    if binary is None:
        checked = "browser check skipped"
        print(
            "check_rendered: SKIPPED the browser check: no Chromium "
            "(apt-get install chromium, or set CHROMIUM=/path/to/chrome)"
        )
    else:
        version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
        print(f"check_rendered: {version.strip() or binary}, pages loaded from {build}")
        with tempfile.TemporaryDirectory(prefix="check-rendered-") as tmp:
            for k, (path, expected) in enumerate(sorted(math_pages.items())):
                rel = path.relative_to(build).as_posix()
                run = chromium(
                    binary,
                    ["--virtual-time-budget=15000", "--dump-dom", path.as_uri()],
                    Path(tmp, f"profile-{k}"),
                )
                dom = parse(run.stdout)
                problems = [f"remote <{e}> {url}" for e, url in dom.resources if REMOTE.search(url)]
                if run.returncode != 0 or dom.formulas == 0:
                    problems.append(f"Chromium failed (exit {run.returncode}): {run.stderr[-300:]}")
                if dom.rendered < expected:
                    problems.append(
                        f"{expected - dom.rendered} of {expected} formulas not rendered"
                    )
                if dom.errors:
                    problems.append(f"{dom.errors} MathJax errors (mjx-merror)")
                problems += [f"raw TeX left: {t!r}" for t in dom.raw_tex[:5]]
                status = "; ".join(problems) if problems else "ok"
                print(f"  {rel}: {dom.rendered}/{expected} formulas rendered: {status}")
                failures += [f"{rel}: {p}" for p in problems]
            if args.screenshots:
                args.screenshots.mkdir(parents=True, exist_ok=True)
                for k, name in enumerate(("math.html", "benchmarks.html")):
                    if not (build / name).is_file():
                        continue
                    out = (args.screenshots / name).with_suffix(".png").resolve()
                    chromium(
                        binary,
                        [
                            "--window-size=1280,1600",
                            "--hide-scrollbars",
                            "--virtual-time-budget=15000",
                            f"--screenshot={out}",
                            (build / name).as_uri(),
                        ],
                        Path(tmp, f"shot-{k}"),
                    )
                    print(f"  screenshot: {out}")

    if failures:
        print(f"check_rendered: FAILED, {len(failures)} problems:")
        for f in failures:
            print(f"  {f}")
        return 1
    print(f"check_rendered: passed: no remote scripts or stylesheets; {checked}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
