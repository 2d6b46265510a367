"""The strategy report as a manager opens it: `starter.py simulate` writes report.html, and a
real browser, offline, shows its summary sentences and every plot (images inside the file, no
request leaves the page). The README's pictures of the report are taken here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lab.run import run_simulation
from tests.helpers import ROOT, SCREENSHOTS

EXPERIMENT = ROOT / "strategies" / "experiments" / "sample.toml"


async def test_the_simulated_report_opens_offline_with_its_plots(new_page: Any, tmp_path: Path) -> None:
    done = run_simulation(loans=4000, days=180, seed=7, out=tmp_path, experiment=EXPERIMENT, processes=1)
    written = {p.name for p in tmp_path.iterdir()}
    assert written >= {"report.html", "summary.csv", "recovery_curve.csv", "roll_rates.csv"}
    page = await new_page(1280, 900)
    await page.context.set_offline(True)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    await page.goto(done.report.as_uri())
    text = await page.inner_text("body")
    assert "Simulation: sample" in text
    for sentence in done.sentences[:3]:
        assert sentence.split(" (95 %")[0] in text
    images = await page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.naturalWidth, i.src.slice(0, 21)])")
    assert len(images) >= 4
    assert all(width > 0 and src == "data:image/png;base64" for width, src in images), images
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
    await page.screenshot(path=str(SCREENSHOTS / "report.png"))
    first_plot = page.locator("img").first
    await first_plot.scroll_into_view_if_needed()
    await first_plot.screenshot(path=str(SCREENSHOTS / "report-recovery.png"))
