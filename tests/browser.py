"""Headless Chromium for the UI tests: Playwright drives Debian's chromium (the one `make test` installs), so
nothing downloads a browser. A page is looked at as a person would: after its scripts ran, with a
screenshot kept in runs/test-artifacts/ to look at after `make test`."""
from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "runs" / "test-artifacts"
NO_CHROMIUM = "chromium is not installed (make test installs Debian's chromium); browser check skipped"

# Each MLflow chart is a plotly div; its card's first line of text is the metric's name. Plotly keeps
# the drawn traces on the div (`.data`), which is what the chart shows, so the points are read from there.
_DRAWN_JS = """() => [...document.querySelectorAll('.js-plotly-plot')].every(p => (p.data || []).length > 0)"""
_CHARTS_JS = """plots => plots.map(plot => {
  let card = plot;
  while (card.parentElement && /^[\\d.\\s-]*$/.test(card.innerText.split('\\n')[0])) card = card.parentElement;
  const title = card.innerText.split('\\n')[0].trim();
  const trace = (plot.data || [])[0] || {x: [], y: []};
  return [title, Array.from(trace.x), Array.from(trace.y)];
})"""


# Only a guard against a page that never gets there: each look waits on an event (a selector, a predicate),
# and a loaded box can take minutes to render MLflow's bundle, so the guard is far above any real wait.
_GUARD_MS = 300_000


def _shot_path(shot: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / shot


class Chromium:
    """One headless browser for a test; `look` and `metric_charts` reuse its page."""

    def __init__(self, page) -> None:
        self.page = page

    def look(self, url: str, shot: str, *, ready: str | None = None, until: str | None = None,
             min_shot_bytes: int = 10_000) -> str:
        """The page's DOM once `ready` (a selector) shows and `until` (a JS predicate) holds, or once the
        network is idle; screenshot kept. A page that polls (an MLflow run in flight) never goes idle, so
        those looks name what they wait for. A page that renders a first frame before its data (MLflow's
        run table) needs `until` as well: its text is checked once, when the data is there."""
        from playwright.sync_api import TimeoutError as PageTimeout

        if self.page.url == url:
            self.page.reload()  # a hash route: going to the same URL again would not load anything anew
        else:
            self.page.goto(url)
        try:
            if ready:
                self.page.wait_for_selector(ready, timeout=_GUARD_MS)
                if until:
                    self.page.wait_for_function(until, timeout=_GUARD_MS)
            else:
                self.page.wait_for_load_state("networkidle", timeout=_GUARD_MS)
        except PageTimeout as error:
            self.page.screenshot(path=str(_shot_path(f"timeout-{shot}")), full_page=True)
            raise AssertionError(f"{url} never showed {ready or 'an idle network'}"
                                 f"{f' with {until} true' if until else ''}; its screenshot is timeout-{shot}") from error
        self.page.screenshot(path=str(_shot_path(shot)), full_page=True)
        assert _shot_path(shot).stat().st_size > min_shot_bytes
        return self.page.content()

    def metric_charts(self, url: str, shot: str) -> dict[str, list[tuple[float, float]]]:
        """The points each chart on an MLflow run's "Model metrics" tab draws, by metric name."""
        self.look(url, shot, ready=".js-plotly-plot", until=_DRAWN_JS)
        rows = self.page.eval_on_selector_all(".js-plotly-plot", _CHARTS_JS)
        return {title: list(zip(xs, ys)) for title, xs, ys in rows}


@contextmanager
def chromium(width: int = 1400, height: int = 900) -> Iterator[Chromium | None]:
    """A browser, or None where chromium is not installed (the caller skips its browser checks then)."""
    executable = shutil.which("chromium")
    if not executable:
        yield None
        return
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield Chromium(browser.new_page(viewport={"width": width, "height": height}))
        finally:
            browser.close()


def skip_without(browser: Chromium | None) -> None:
    """Called last, after every check that needs no browser ran."""
    if browser is None:
        pytest.skip(NO_CHROMIUM)
