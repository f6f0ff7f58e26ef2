"""models"""


def __getattr__(name: str):  # the names this module had in mlxrnn 0.1.0, with a DeprecationWarning
    from mlxrnn._moved import moved_name

    return moved_name(__name__, name)
