"""nn: the math of the layers. Importing it registers every cell, including those in their own files."""

from mlxrnn.nn import min_cells  # noqa: F401  (registers mingru and minlstm)
