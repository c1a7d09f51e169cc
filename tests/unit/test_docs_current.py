"""The generated reference pages (docs/configuration.md, docs/cli.md) must match the code."""

from tools.docs_gen import render_all


def test_generated_docs_are_current():
    stale = [str(path.name) for path, text in render_all().items() if path.read_text() != text]
    assert stale == [], f"regenerate with `make docs`: {stale} are out of date"
