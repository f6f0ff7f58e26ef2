"""The planted bugs of tests/mutations.py still have something to plant into.

Running the mutations takes minutes, so CI does not; but a refactor that moves the code a
mutation replaces would turn that check into a silent "stale" line. Here each mutation's text
must still occur exactly once in the package, as ``plant`` requires.
"""

from __future__ import annotations

import pytest

from tests.mutations import MUTATIONS, ROOT


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.name for m in MUTATIONS])
def test_every_mutation_still_finds_its_text_exactly_once(mutation):
    counts = {path.relative_to(ROOT): path.read_text(encoding="utf-8").count(mutation.old)
              for path in (ROOT / "mlxrnn").rglob("*.py")}
    found = {path: n for path, n in counts.items() if n}
    assert sum(found.values()) == 1, f"{mutation.name}: its text occurs {found or 'nowhere'}; update tests/mutations.py"
