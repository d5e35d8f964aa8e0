"""The README stays a short entry point that matches CI, and links only into the docs site.

`mkdocs build --strict` (run by .ci/run) checks every link and API page inside docs/; the README is
outside docs/, so these checks cover it.
"""
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _nav_pages(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from _nav_pages(item)
    elif isinstance(node, dict):
        for value in node.values():
            yield from _nav_pages(value)


def test_the_readme_is_short():
    assert len(README.splitlines()) <= 250


def test_the_readme_test_command_is_the_one_ci_runs():
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    (readme_command,) = [line for block in blocks for line in block.splitlines() if "pytest" in line]
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci_lines[-1] == readme_command
    assert "mkdocs build --strict" in readme_command


def test_readme_links_stay_inside_the_repository_and_reach_site_pages():
    nav = set(_nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]))
    links = re.findall(r"\]\(([^)\s]+)\)", README)
    assert links
    for link in links:
        target = link.split("#")[0]
        assert "://" not in link and not target.startswith(("/", "..")), link
        assert target.startswith("docs/"), link
        # a page in the site's nav is checked to exist by `mkdocs build --strict`
        assert (ROOT / target).is_file() or target.removeprefix("docs/") in nav, link
