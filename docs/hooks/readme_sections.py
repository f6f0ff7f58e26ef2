"""MkDocs hook: a guide page's ``<!-- readme: ## Heading -->`` line becomes that section of
README.md, so the guides and the README never drift apart (the README is the one source).

Links the README makes relative to the repository are rewritten for the site: its figures
(``docs/figures/...``) relative to the guide page, other files of the repository as code text,
since the site does not serve them.
"""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
DIRECTIVE = re.compile(r"^<!-- readme: (#+ .+?) -->$", re.M)
REPO_LINK = re.compile(r"\]\((?!https?://|#|docs/figures/)([^)]+)\)")


def readme_section(heading: str) -> str:
    """The README section under ``heading`` (e.g. "## Word models on corpora as they come"),
    without its heading, down to the next heading of the same or a higher level."""
    text = README.read_text(encoding="utf-8")
    level = len(heading.split(" ", 1)[0])
    start = text.find(f"\n{heading}\n")
    if start < 0:
        raise ValueError(f"README.md has no section {heading!r}")
    body = text[start + len(heading) + 2 :]
    end = re.search(rf"^#{{1,{level}}} ", body, flags=re.M)
    body = body[: end.start()] if end else body
    body = body.replace("](docs/figures/", "](../figures/")
    return REPO_LINK.sub(lambda m: f"] (`{m.group(1)}` in the repository)", body)


def on_page_markdown(markdown: str, **kwargs) -> str:
    return DIRECTIVE.sub(lambda m: readme_section(m.group(1)), markdown)
