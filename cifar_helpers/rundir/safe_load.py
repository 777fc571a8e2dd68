"""Reading pickles from folders a user points us at, without running code from them.

``pickle.load`` calls whatever callable a pickle names; :class:`_BatchUnpickler` allows only the globals
a CIFAR-10 batch needs and refuses every other one before it is looked up.
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
from typing import Any

# (module, name) pairs a pickled CIFAR-10 batch needs, under NumPy 1.x's and 2.x's module names and
# every pickle protocol; none of them can reach the file system, a process or an import.
_NUMPY_CORE_GLOBALS = {("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer")}
_ALLOWED_BATCH_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}
    | {
        (f"{package}.{module}", name)
        for package in ("numpy.core", "numpy._core")
        for module, name in _NUMPY_CORE_GLOBALS
    }
)


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle names a global outside the allow-list; nothing from it was called."""


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler that reconstructs only what a CIFAR-10 batch holds (:data:`_ALLOWED_BATCH_GLOBALS`)."""

    def __init__(self, file: io.BufferedIOBase, *, source: str | os.PathLike[str], **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self.source = str(source)

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_BATCH_GLOBALS:
            raise UnsafePickleError(
                f"{self.source} asks to run {module}.{name}, which a CIFAR-10 batch never contains; "
                "refusing to load it (only containers, str/bytes, numbers and NumPy arrays are allowed)"
            )
        if module.startswith(("numpy.core.", "numpy._core.")):
            # numpy.core is a deprecated alias of numpy._core on NumPy 2; import the real module directly.
            submodule = module.rsplit(".", 1)[1]
            try:
                return getattr(importlib.import_module(f"numpy._core.{submodule}"), name)
            except ImportError:  # NumPy 1.x
                return getattr(importlib.import_module(f"numpy.core.{submodule}"), name)
        return getattr(importlib.import_module(module), name)

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.source} uses persistent ids, which a CIFAR-10 batch never contains")


def load_batch_pickle(path: str | os.PathLike[str]) -> Any:
    """Unpickle a CIFAR-10 batch file with :class:`_BatchUnpickler`.

    ``latin1`` reads the official archive's Python 2 pickles (str keys); Python 3 pickles keep bytes
    keys. Raises :class:`UnsafePickleError` for any other global, before calling anything.
    """
    with open(path, "rb") as f:
        return _BatchUnpickler(f, source=path, encoding="latin1").load()
