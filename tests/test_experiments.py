"""Comparing experiments as the README and docs/experimenting.md say: `dvc exp show` on one
screen, `dvc plots diff` drawing every figure of both revisions, in a real browser without
internet too (docs/plots.md), `dvc exp apply` leaving a clean `dvc status`, and `dvc metrics
diff` empty between two identical trainings."""

from __future__ import annotations

import html
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import BIN_DIR, REPO_ROOT, TrainedPipeline, copy_trained, run_command

pytestmark = pytest.mark.e2e

SCREEN_WIDTH = 160
FIGURES = [
    "reports/confusion_matrix.png",
    "reports/per_class_f1.png",
    "reports/training_curves.png",
    "reports/first_layer_filters.png",
    "reports/activation_maps.png",
    "reports/mistakes.png",
    "reports/calibration.png",
]
CURVES = ["Loss per epoch", "Accuracy per epoch", "Test confusion matrix", "Test F1 per class"]


def running_stages(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


def readme_exp_show() -> list[str]:
    """The `dvc exp show` command of the README's experiment loop, which docs/experimenting.md
    ("Compare") shows too: the same in both."""
    commands = []
    for page in ("README.md", "docs/experimenting.md"):
        text = (REPO_ROOT / page).read_text()
        found = re.search(r"^(dvc exp show --only-changed [^#\n]*?)\s*(#.*)?$", text, re.MULTILINE)
        assert found, f"{page} shows no `dvc exp show --only-changed ...` command"
        commands.append(shlex.split(found.group(1)))
    assert commands[0] == commands[1], "README.md and docs/experimenting.md differ"
    return commands[0]


@pytest.fixture(scope="module")
def repo(trained_pipeline: TrainedPipeline, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained pipeline and one experiment with another learning rate."""
    repo = copy_trained(trained_pipeline, tmp_path_factory.mktemp("exps") / "repo", False)
    result = run_command(
        [
            "dvc",
            "exp",
            "run",
            "-n",
            "lr-high",
            "-S",
            "train.epochs=2",
            "-S",
            "train.learning_rate=0.005",
        ],
        repo,
    )
    assert running_stages(result.stdout) == ["check", "train", "evaluate", "report"]
    return repo


def test_exp_show_with_the_readme_recipe_fits_one_screen(repo: Path) -> None:
    result = run_command([*readme_exp_show(), "--no-pager"], repo, COLUMNS=str(SCREEN_WIDTH))
    lines = result.stdout.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= SCREEN_WIDTH
    assert "…" not in result.stdout, f"columns cut to fit:\n{result.stdout}"
    header = next(line for line in lines if "Experiment" in line).split()
    assert {"test_accuracy", "test_loss", "test_macro_f1", "train.learning_rate"} <= set(header)
    assert not [column for column in header if "/" in column], "hash columns shown"
    assert "lr-high" in result.stdout


def test_plots_diff_draws_every_figure_of_both_revisions(repo: Path, tmp_path: Path) -> None:
    result = run_command(
        ["dvc", "plots", "diff", "HEAD", "lr-high", "--json", "-o", str(tmp_path / "plots")], repo
    )
    plots = json.loads(result.stdout)
    assert "errors" not in plots, plots.get("errors")
    assert set(plots["data"]) == {*CURVES, *FIGURES}
    for name in CURVES:
        [plot] = plots["data"][name]
        assert plot["type"] == "vega" and plot["revisions"] == ["HEAD", "lr-high"], name
        drawn = {row["rev"] for row in plot["content"]["data"]["values"]}
        assert drawn == {"HEAD", "lr-high"}, name
    for name in FIGURES:
        images = plots["data"][name]
        assert [image["revisions"] for image in images] == [["HEAD"], ["lr-high"]], name
        contents = [Path(image["url"]).read_bytes() for image in images]
        assert all(content[:4] == b"\x89PNG" for content in contents), name
    # Different trainings, different figures: each revision's own file was loaded.
    assert len({Path(i["url"]).read_bytes() for i in plots["data"]["reports/mistakes.png"]}) == 2


def test_plots_show_draws_each_figure_once(repo: Path) -> None:
    run_command(["dvc", "plots", "show"], repo)
    html = (repo / "dvc_plots" / "index.html").read_text()
    images = re.findall(r'<img src="(static/[^"]+)"', html)  # not the chart scripts' own
    assert sorted(images) == sorted(f"static/workspace_{f.replace('/', '_')}" for f in FIGURES)
    titles = re.findall(r'"title": \{\s*"text": "([^"]*)"', html)
    assert sorted(titles) == sorted(CURVES)


# Debian's chromium, headless: the browser test of the plots pages skips without it.
CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium: `apt-get install chromium` (Debian's package; .ci/run installs it)",
)
PAGE_WIDTH = 1400  # pixels: the window the pages are laid out in
# DVC's div of a chart calls vega-embed with the div's id; vega-embed replaces the call by the
# chart, here an <svg class="marks"> whose data are drawn in groups of class "role-mark" (the
# axes, legends and titles have roles of their own).
CHART_CALL = re.compile(r"vegaEmbed\('#([^']+)', spec\);")
# Added at the end of a page: once its scripts have had time to draw the charts (CHART_IDS), it
# writes what the browser drew and laid out into the page, where --dump-dom prints it.
LAYOUT_PROBE = """<script>
addEventListener("load", () => setTimeout(() => {
  const charts = CHART_IDS.map((id) => document.getElementById(id)).map((box) => ({
    id: box.id,
    marks: box.querySelectorAll("svg.marks g.role-mark > *").length,
    text: box.querySelector("svg.marks")?.textContent ?? "",
    note: box.querySelector(".chart-not-drawn")?.textContent ?? null,
  }));
  const images = [...document.images].map((image) => {
    const loaded = image.complete && image.naturalWidth > 0;
    const { left, right, top } = image.getBoundingClientRect();
    return { src: image.getAttribute("src"), loaded, left, right, top };
  });
  const page = document.documentElement;
  const report = document.createElement("pre");
  report.id = "layout-probe";
  report.textContent = JSON.stringify(
    { width: page.clientWidth, scrollWidth: page.scrollWidth, charts, images });
  document.body.append(report);
}, 3000));
</script>
"""


def offline_browser_view(page: Path, profile: Path) -> dict[str, Any]:
    """Open `page` (a dvc_plots index.html) from file:// in headless chromium, with every host
    name unresolvable and every proxied request refused (no internet, no CDN), and return what
    LAYOUT_PROBE saw: the charts, the images and the page's width."""
    assert CHROMIUM is not None
    text = page.read_text(encoding="utf-8")
    before, body_end, after = text.rpartition("</body>")
    assert body_end, f"{page} has no </body>"
    chart_ids = json.dumps(CHART_CALL.findall(text))
    probe = LAYOUT_PROBE.replace("CHART_IDS", chart_ids)
    probed = page.with_name("probed.html")  # beside it, for its images' relative paths
    probed.write_text(before + probe + body_end + after, encoding="utf-8")
    root = ["--no-sandbox"] if os.geteuid() == 0 else []  # chromium's sandbox refuses root
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            *root,
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--proxy-server=127.0.0.1:9",
            f"--user-data-dir={profile}",
            f"--window-size={PAGE_WIDTH},1000",
            "--virtual-time-budget=20000",
            "--dump-dom",
            probed.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    found = re.search(r'<pre id="layout-probe">(.*?)</pre>', result.stdout, re.DOTALL)
    assert found, f"chromium printed no layout report:\n{result.stderr[-3000:]}"
    report: dict[str, Any] = json.loads(html.unescape(found.group(1)))
    return report


def assert_every_chart_drawn(report: dict[str, Any], revisions: list[str]) -> None:
    """Each of the CURVES drawn, with data, and each revision named in it (legend or header)."""
    assert len(report["charts"]) == len(CURVES), report["charts"]
    for chart in report["charts"]:
        assert chart["marks"] > 0 and chart["note"] is None, f"chart not drawn: {chart}"
        assert all(revision in chart["text"] for revision in revisions), chart


def assert_images_fit(report: dict[str, Any]) -> None:
    assert report["images"] and all(image["loaded"] for image in report["images"]), report
    assert report["scrollWidth"] <= report["width"], f"the page scrolls sideways: {report}"
    for image in report["images"]:
        assert image["left"] >= 0 and image["right"] <= report["width"], image


@needs_chromium
def test_without_make_setup_each_chart_says_how_to_draw_it(
    trained_pipeline: TrainedPipeline, tmp_path: Path
) -> None:
    """A fresh clone where `make setup` has not written the page with its scripts (no
    .dvc/config.local) gets .dvc/config's fallback page: offline, each chart is a note that
    says what to run, not a blank space."""
    repo = copy_trained(trained_pipeline, tmp_path / "repo")
    assert not (repo / ".dvc/config.local").exists()
    run_command(["dvc", "plots", "show"], repo)
    report = offline_browser_view(repo / "dvc_plots/index.html", tmp_path / "chromium")
    assert len(report["charts"]) == len(CURVES), report
    for chart in report["charts"]:
        assert chart["marks"] == 0 and "Run `make setup`" in (chart["note"] or ""), chart
    assert_images_fit(report)


@pytest.fixture(scope="module")
def offline_page(repo: Path) -> Path:
    """The page `make setup` writes, with the chart scripts inlined, named in config.local."""
    run_command([str(BIN_DIR / "python"), "scripts/plots_page.py"], repo)
    assert "plots_page.html" in (repo / ".dvc/config.local").read_text()
    return repo / ".dvc/plots_page.html"


@needs_chromium
def test_plots_show_draws_every_chart_offline(
    repo: Path, offline_page: Path, tmp_path: Path
) -> None:
    run_command(["dvc", "plots", "show"], repo)
    page = repo / "dvc_plots/index.html"
    assert "cdn." not in page.read_text(encoding="utf-8")
    report = offline_browser_view(page, tmp_path / "chromium")
    assert_every_chart_drawn(report, ["workspace"])
    assert len(report["images"]) == len(FIGURES)
    assert_images_fit(report)


@needs_chromium
def test_plots_diff_draws_offline_and_its_images_fit_side_by_side(
    repo: Path, offline_page: Path, tmp_path: Path
) -> None:
    """Elsewhere than dvc_plots/ (`-o`) too: the scripts are in the page, not beside it."""
    run_command(["dvc", "plots", "diff", "HEAD", "lr-high", "-o", str(tmp_path / "diff")], repo)
    report = offline_browser_view(tmp_path / "diff/index.html", tmp_path / "chromium")
    assert_every_chart_drawn(report, ["HEAD", "lr-high"])
    assert_images_fit(report)
    for figure in FIGURES:
        copies = [i for i in report["images"] if i["src"].endswith(figure.replace("/", "_"))]
        assert len(copies) == 2, (figure, report["images"])  # HEAD's and lr-high's
        assert copies[0]["top"] == copies[1]["top"], f"{figure}: not side by side: {copies}"


def test_exp_apply_leaves_dvc_status_clean(repo: Path) -> None:
    before = (repo / "models/mlflow_run.json").read_text()
    run_command(["dvc", "exp", "apply", "HEAD"], repo)  # back to the baseline's outputs
    assert (repo / "models/mlflow_run.json").read_text() != before
    status = run_command(["dvc", "status"], repo)
    assert "Data and pipelines are up to date." in status.stdout, status.stdout
    run_command(["dvc", "exp", "apply", "lr-high"], repo)
    assert (repo / "models/mlflow_run.json").read_text() == before
    status = run_command(["dvc", "status"], repo)
    assert "Data and pipelines are up to date." in status.stdout, status.stdout


@pytest.mark.slow
def test_identical_trainings_have_no_metrics_diff_and_exp_show_still_fits(repo: Path) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["train"]["learning_rate"] == 0.005  # the workspace holds lr-high's results
    result = run_command(["dvc", "exp", "run", "-n", "again", "-S", "train.epochs=2"], repo)
    assert "train" in running_stages(result.stdout)  # trained again, not restored
    diff = run_command(["dvc", "metrics", "diff", "HEAD", "again"], repo)
    assert diff.stdout.strip() == "", diff.stdout
    shown = run_command([*readme_exp_show(), "--no-pager"], repo, COLUMNS=str(SCREEN_WIDTH))
    assert "again" in shown.stdout and "lr-high" in shown.stdout
    assert "…" not in shown.stdout, shown.stdout
    assert max(len(line.rstrip()) for line in shown.stdout.splitlines()) <= SCREEN_WIDTH
