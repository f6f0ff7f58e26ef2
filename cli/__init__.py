"""The ``mlxrnn`` command-line application (installed as the package ``mlxrnn_cli``)."""
