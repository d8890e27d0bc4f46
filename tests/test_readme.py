from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readmes_setup_and_test_commands():
    """CI must install and test exactly as the README tells a user to."""
    readme = (ROOT / "README.md").read_text()
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    setup = next(line for line in ci_lines if line.startswith("python3 -m venv"))
    test = next(line for line in ci_lines if line.startswith("python -m pytest"))
    assert setup in readme
    assert test in readme
    assert readme.index(setup) < 2000, "the setup command belongs at the top of the README"
