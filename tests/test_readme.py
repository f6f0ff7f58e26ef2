"""The README's library example runs exactly as printed, and it learns."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_library_example_runs_and_learns(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert blocks, "README.md has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["result"].loss < 0.1
    assert "final loss" in capsys.readouterr().out


def test_readme_starts_with_the_two_commands():
    text = README.read_text(encoding="utf-8")
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1)
    commands = [line for line in first_block.splitlines() if line and not line.startswith("#")]
    assert commands[0].startswith("pip install -e .") and "mlxrnn train" in commands[0]
    assert commands[1].startswith("pip install -e \".[mlx,dev]\"") and "pytest" in commands[1]
    assert "python -m pytest -q" in (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
