"""Optional dependencies: fail early, with the install command, when an extra is missing."""

from __future__ import annotations

import importlib.util

from coupled_sde.errors import MissingDependencyError

__all__ = ["require"]


def require(package: str, extra: str) -> None:
    """Raise a :class:`MissingDependencyError` (an ``ImportError``) unless ``package`` is importable.

    Only looks the package up (``importlib.util.find_spec``); it does not import it, so calling
    this at the top of a module that imports a heavy dependency lazily stays cheap.

    Args:
        package: the importable top-level module name, e.g. ``"diffusers"``.
        extra: the ``coupled-sde`` extra that installs it, e.g. ``"diffusers"``.

    Raises:
        MissingDependencyError: its message ends with ``pip install "coupled-sde[<extra>]"`` and
            its ``name`` is ``package``.
    """
    try:
        found = importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a broken parent package or a bad __spec__
        found = False
    if not found:
        raise MissingDependencyError(
            f"this feature needs the optional dependency {package!r}, which is not installed; "
            f'install it with: pip install "coupled-sde[{extra}]"',
            name=package,
        )
