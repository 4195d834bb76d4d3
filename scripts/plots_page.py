"""Write the page of `dvc plots show` and `dvc plots diff` whose charts draw without internet.

    python scripts/plots_page.py        (`make setup` runs it)

DVC's own page loads vega, vega-lite and vega-embed from a CDN: offline its charts stay blank,
without an error. This writes scripts/plots_page.html with those three libraries inlined, as
one script from the vl-convert-python package (its version pinned by uv.lock), to
.dvc/plots_page.html, and names that file in .dvc/config.local (`plots.html_template`, a path
relative to .dvc/), so that every page DVC writes, in dvc_plots/ or wherever `-o` says, holds
its scripts. A clone where this has not run uses scripts/plots_page.html itself, which
.dvc/config names: the CDN where there is internet, a note in place of each chart where not.
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import vl_convert
from dvc_render.vega_templates import TEMPLATES

from cnn_pipeline.atomic import atomic_path

REPO_ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = REPO_ROOT / "scripts" / "plots_page.html"
PAGE = REPO_ROOT / ".dvc" / "plots_page.html"
SCRIPTS_PLACEHOLDER = "{scripts}"  # where DVC would put its CDN links
DVC = Path(sys.executable).parent / "dvc"
# What the bundle runs: the globals that DVC's chart divs call (vegaEmbed) and vega-embed expects.
GLOBALS_SNIPPET = "window.vegaEmbed = vegaEmbed; window.vega = vega; window.vegaLite = vegaLite;"


class PlotsPageError(Exception):
    pass


def vega_lite_version() -> str:
    """The newest Vega-Lite that vl-convert bundles with the major version of DVC's own plot
    templates, whose specs say which one they are written for (`$schema`: .../v5.json)."""
    schemas = {str(template.DEFAULT_CONTENT["$schema"]) for template in TEMPLATES}
    majors = {re.search(r"/v(\d+)(?:\.\d+)*\.json$", schema) for schema in schemas}
    if None in majors or len(majors) != 1:
        raise PlotsPageError(f"DVC's plot templates name no single Vega-Lite version: {schemas}")
    (major,) = {match.group(1) for match in majors if match}
    bundled = [v for v in vl_convert.get_vegalite_versions() if v.split(".")[0] == major]
    if not bundled:
        raise PlotsPageError(
            f"vl-convert-python {version('vl-convert-python')} bundles no Vega-Lite {major} "
            f"(it has {vl_convert.get_vegalite_versions()}), which DVC's plot templates need: "
            "pin a vl-convert-python that does in pyproject.toml"
        )
    return max(bundled, key=lambda number: tuple(int(part) for part in number.split(".")))


def chart_scripts() -> str:
    """vega, vega-lite and vega-embed as one inline <script>."""
    bundle = vl_convert.javascript_bundle(GLOBALS_SNIPPET, vl_version=vega_lite_version())
    # Inside an inline script, "</script" would end it and "<!--" can hide its end.
    bundle = re.sub(r"</(script)", r"<\\/\1", bundle, flags=re.IGNORECASE)
    if "<!--" in bundle:
        raise PlotsPageError("vl-convert's script bundle holds '<!--': it cannot be inlined")
    # Its own scope, so that none of its top-level names meets the page's (DVC's `var spec`).
    return f"<script>\n(() => {{\n{bundle}\n}})();\n</script>"


def write_page() -> None:
    template = TEMPLATE.read_text(encoding="utf-8")
    if template.count(SCRIPTS_PLACEHOLDER) != 1:
        raise PlotsPageError(f"{TEMPLATE} must hold {SCRIPTS_PLACEHOLDER} once")
    page = template.replace(SCRIPTS_PLACEHOLDER, chart_scripts())
    with atomic_path(PAGE) as staged:
        staged.write_text(page, encoding="utf-8")
    subprocess.run(
        [DVC, "config", "--local", "plots.html_template", PAGE.name], cwd=REPO_ROOT, check=True
    )


def main() -> None:
    try:
        write_page()
    except PlotsPageError as error:
        sys.exit(f"plots_page: {error}")
    print(f"plots_page: wrote {PAGE.relative_to(REPO_ROOT)}, named in .dvc/config.local")


if __name__ == "__main__":
    main()
