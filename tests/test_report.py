"""The HTML report: content, CLI, and rendering in a real headless Chromium."""
import base64
import re
import shutil
import tempfile

import numpy as np
import pytest

import eplb
from eplb.cli import main
from eplb.report import build_report, compare_methods, write_report
from traces import load_workload

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def prefill():
    return load_workload("prefill_in1024"), eplb.preset("deepseek-v3-prefill")


@pytest.fixture(scope="module")
def html_text(prefill):
    loads, topo = prefill
    return build_report(loads, topo, ["deepseek", "deepseek-global"])


def _images(text):
    return re.findall(r"<img alt='([\w-]+)' src='data:image/png;base64,([A-Za-z0-9+/=]+)'>", text)


def test_report_embeds_three_png_plots(html_text):
    imgs = _images(html_text)
    assert [a for a, _ in imgs] == ["gpu-bars", "per-layer", "gap-time"]
    for _, data in imgs:
        raw = base64.b64decode(data)
        assert raw.startswith(PNG) and len(raw) > 5000
    # self-contained: nothing is fetched from elsewhere
    assert "<link" not in html_text and "<script" not in html_text and "http" not in html_text.replace("http-equiv", "")


def test_report_table_matches_evaluate(prefill, html_text):
    loads, topo = prefill
    for method in ("deepseek", "deepseek-global"):
        s = eplb.evaluate(eplb.place(loads, topo, method), loads).summary()
        row = re.search(rf"<tr[^>]*><td class=l>{method}</td>.*?</tr>", html_text).group(0)
        cells = re.findall(r"<td>([\d.]+)</td>", row)
        assert float(cells[0]) == pytest.approx(s["imbalance_mean"], abs=5e-5)
        assert float(cells[5]) == pytest.approx(s["gap_worst"], abs=5e-5)
        # the analytic model's predicted step time for this placement's per-GPU loads
        from eplb.cost import deployment_for, moe_step_time

        p = eplb.place(loads, topo, method)
        step = moe_step_time(eplb.evaluate(p, loads).gpu_loads, deployment_for(topo)).summary()["step_time_ms"]
        assert float(cells[6]) == pytest.approx(step, abs=0.05)
    # the worst layer shown is the baseline's worst
    worst = eplb.evaluate(eplb.place(loads, topo, "deepseek"), loads).summary()["worst_layer"]
    assert f"Layer {worst} is where deepseek is least balanced" in html_text


def test_report_lists_every_registered_method(prefill):
    from traces import from_array

    loads, topo = prefill
    two = from_array(loads.loads[:2], layers=loads.layers[:2], name="two layers")
    results = compare_methods(two, topo, time_limit=0.1)
    assert [r.method for r in results] == eplb.methods.methods(standalone=True)
    assert results[0].ok and all(r.ok or r.error for r in results)
    text = build_report(two, topo, results=results)
    for r in results:
        assert f"<td class=l>{r.method}</td>" in text


def test_failed_method_is_reported_not_raised(prefill, monkeypatch):
    from eplb._registry import Entry
    from eplb.methods import METHODS

    loads, topo = prefill

    def broken(loads, topology, **_):
        raise eplb.EplbError("cannot place on this topology")

    monkeypatch.setitem(METHODS._entries, "broken-test", Entry("broken-test", broken, "always fails"))
    results = compare_methods(loads, topo, ["deepseek", "broken-test"])
    assert results[0].ok and not results[1].ok and "cannot place" in results[1].error
    text = build_report(loads, topo, results=results)
    assert "failed: cannot place on this topology" in text and len(_images(text)) == 3


def test_cli_report(tmp_path, capsys):
    out = tmp_path / "report.html"
    assert main(["report", "--preset", "deepseek-v3-decode", "--methods", "deepseek", "-o", str(out)]) == 0
    text = out.read_text()
    assert "decode_in1000out1000" in text and len(_images(text)) == 3
    assert main(["report", "--methods", "nope", "-o", str(tmp_path / "bad.html")]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert not (tmp_path / "bad.html").exists()


# ------------------------------------------------------------------------------- real browser
def _browser():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path, shutil.which("chromedriver")
    return None, shutil.which("chromedriver")


@pytest.mark.browser
def test_report_renders_in_headless_chromium(tmp_path, prefill):
    binary, driver_path = _browser()
    if binary is None or driver_path is None:
        pytest.skip("Chromium and chromedriver are not installed (Debian: apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    loads, topo = prefill
    page = tmp_path / "report.html"
    write_report(page, loads, topo, ["deepseek", "deepseek-global"])
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1200,2400", f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        driver.get(page.as_uri())
        assert driver.title == "Expert placement report: prefill_in1024"
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight,"
            " i.getBoundingClientRect().width])")
        assert [i[0] for i in images] == ["gpu-bars", "per-layer", "gap-time"]
        for alt, complete, w, h, shown in images:
            assert complete and w >= 800 and h >= 200 and shown > 300, (alt, complete, w, h, shown)
        rows = driver.execute_script("return document.querySelectorAll('#summary tr').length")
        assert rows == 3  # header + two methods
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[0] >= 2000 and pixels.shape[1] >= 1100
    # the plots put colour on the page: many pixels are neither white nor grey
    rgb = pixels[..., :3]
    coloured = (rgb.max(axis=2) - rgb.min(axis=2)) > 0.25
    assert coloured.mean() > 0.02


def test_previous_placement_reaches_methods_that_need_it(prefill, monkeypatch, tmp_path):
    from eplb._registry import Entry
    from eplb.methods import METHODS
    from eplb.methods import MethodOutput

    loads, topo = prefill

    def keep(loads, topology, previous=None, **_):
        if previous is None:
            raise eplb.EplbError("needs the current placement")
        return MethodOutput(previous.phy2log)

    monkeypatch.setitem(METHODS._entries, "keep-test", Entry("keep-test", keep, "keeps the current placement"))
    assert not compare_methods(loads, topo, ["keep-test"])[0].ok
    prev = eplb.place(loads, topo, "deepseek-global")
    res = compare_methods(loads, topo, ["keep-test"], previous=prev)[0]
    assert res.ok and np.array_equal(res.placement.phy2log, prev.phy2log)
    prev.save(tmp_path / "prev.json")
    out = tmp_path / "r.html"
    assert main(["report", "--workload", "prefill_in1024", "--preset", "deepseek-v3-prefill", "--methods", "keep-test",
                 "--previous", str(tmp_path / "prev.json"), "-o", str(out)]) == 0
    assert "failed" not in out.read_text()
