"""Extensions outside the package: a model, backbone or backend is one module that registers itself
(``@register_model``, ``@register_backbone``, ``@register_backend``). edgead imports such modules when
they are named in ``EDGEAD_PLUGINS`` (comma-separated module names, so that fresh processes such as
``edgead bench``'s measurements see them too) or declared as ``edgead.plugins`` entry points."""

from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points

from edgead.errors import EdgeadError

_loaded: set[str] = set()


def load_plugins() -> None:
    names = [n.strip() for n in os.environ.get("EDGEAD_PLUGINS", "").split(",") if n.strip()]
    names += [ep.value for ep in entry_points(group="edgead.plugins")]
    for name in names:
        if name in _loaded:
            continue
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise EdgeadError(f"plugin {name!r} (EDGEAD_PLUGINS or an edgead.plugins entry point) cannot be "
                              f"imported ({e}); fix the name or its PYTHONPATH") from None
        _loaded.add(name)
