from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readmes_setup_and_test_commands():
    """CI must install and test exactly as the README tells a user to."""
    readme = (ROOT / "README.md").read_text()
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    commands = [line for line in ci_lines if line and not line.startswith(("#", "set ", "cd "))]
    setup = next(line for line in commands if line.startswith("python3 -m venv"))
    assert any(line.startswith("python -m pytest") for line in commands)
    for line in commands:   # the setup, the Triton server's environment, the tests
        assert line in readme, line
    assert readme.index(setup) < 2000, "the setup command belongs at the top of the README"


def test_the_cli_reference_is_made_from_the_parser():
    from edgegen.cli_reference import cli_reference

    assert (ROOT / "docs" / "cli-reference.md").read_text() == cli_reference(), \
        "regenerate it: python -m edgegen.cli_reference > docs/cli-reference.md"


def test_every_option_says_what_it_does_and_its_default():
    import argparse

    from edgegen.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in commands.choices.items():
        for action in parser._actions:
            if action.option_strings and action.dest != "help":
                help_text = parser._get_formatter()._get_help_string(action)
                assert help_text.strip(), (name, action.option_strings)
                if action.default not in (None, False) and action.default != argparse.SUPPRESS:
                    assert "default" in help_text, (name, action.option_strings, help_text)


def test_links_in_the_readme_and_docs_point_at_files_that_exist():
    import re

    for page in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#\s]+)\)", page.read_text()):
            if not target.startswith(("http://", "https://")):
                assert (page.parent / target).exists(), f"{page.relative_to(ROOT)}: {target}"


def test_the_readme_quickstart_runs(tmp_path):
    """The ten lines a newcomer copies: on the shipped models by name (exported into a private
    cache here, as in a checkout; a device's edgegen-models wheel carries the packages)."""
    import os
    import re
    import subprocess
    import sys

    from edgegen.export.shipped import export_shipped

    for name in ("vae-digits", "diffusion-digits"):   # a checkout's first use exports them (the wheel carries them)
        export_shipped(name, tmp_path / "cache" / "edgegen", report=lambda line: None)
    readme = (ROOT / "README.md").read_text()
    quickstart = readme[readme.index("## Quickstart"):]
    code = re.search(r"```python\n(.*?)```", quickstart, re.S).group(1)
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "sevens.png").stat().st_size > 0
