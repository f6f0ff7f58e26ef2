"""The README's library example runs exactly as printed, and it learns."""

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_block(heading: str) -> str:
    """The first ```python block of the README section ``heading``."""
    text = README.read_text(encoding="utf-8")
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, f"README.md's section {heading!r} has no python example"
    return blocks[0]


def test_readme_library_example_runs_and_learns(capsys):
    namespace: dict = {}
    exec(compile(_python_block("Use it as a library"), "README.md", "exec"), namespace)
    assert namespace["result"].loss < 0.1
    assert "final loss" in capsys.readouterr().out


def test_readme_from_python_example_runs_as_the_cli_would(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # it writes runs/ where it runs
    namespace: dict = {}
    exec(compile(_python_block("From Python"), "README.md", "exec"), namespace)
    summary, lm, model, same = (namespace[k] for k in ("summary", "lm", "model", "same"))
    assert summary.best_val_loss < 3.3  # learned something: uniform over 65 characters is 4.17
    assert namespace["text"].startswith("ROMEO:") and len(namespace["text"]) == len("ROMEO:") + 60
    assert lm.sample(length=60, prime="ROMEO:", seed=1) == namespace["text"]
    assert namespace["history"]["val_accuracy"][-1] > 0.9
    x, _ = namespace["signs"](50)
    np.testing.assert_array_equal(same.predict(x), model.predict(x))
    out = capsys.readouterr().out
    assert "'event': 'eval'" in out and "bits/char" in out and "parameters" in out


def test_readme_starts_with_the_two_commands():
    text = README.read_text(encoding="utf-8")
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1)
    commands = [line for line in first_block.splitlines() if line and not line.startswith("#")]
    assert commands[0].startswith("pip install -e .") and "mlxrnn train" in commands[0]
    assert commands[1].startswith("pip install -e \".[mlx,dev]\"") and "pytest" in commands[1]
    assert "python -m pytest -q" in (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
