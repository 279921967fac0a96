"""Precision keys, parsed once for every verb: ``fp32 | fp16 | int8 | int8-cpu | int8-tensorrt``.

A key names a graph in a bundle (``model.<key>.onnx``). ``int8`` alone is not a graph: it is resolved
per backend (:meth:`edgead.bundle.Bundle.resolve`) to the recipe built for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgead.errors import EdgeadError

BASES = ("fp32", "fp16", "int8")
RECIPES = ("cpu", "tensorrt")
KEYS = ("fp32", "fp16", "int8", *(f"int8-{r}" for r in RECIPES))


@dataclass(frozen=True)
class PrecisionKey:
    base: str  # fp32 | fp16 | int8
    recipe: str | None = None  # int8 only: cpu | tensorrt (None = not yet resolved)

    @classmethod
    def parse(cls, text: str) -> PrecisionKey:
        base, _, recipe = str(text).partition("-")
        if base not in BASES or (recipe and (base != "int8" or recipe not in RECIPES)):
            raise EdgeadError(f"--precision {text!r}: choose {', '.join(KEYS)}")
        return cls(base, recipe or None)

    @property
    def resolved(self) -> bool:
        """Whether the key names one graph file (``int8`` needs a recipe)."""
        return self.base != "int8" or self.recipe is not None

    def with_default_recipe(self, backend: str) -> PrecisionKey:
        """``int8`` -> the recipe a build for ``backend`` makes (TensorRT's on tensorrt, else cpu)."""
        if self.resolved:
            return self
        return PrecisionKey("int8", "tensorrt" if backend == "tensorrt" else "cpu")

    def __str__(self) -> str:
        return self.base + (f"-{self.recipe}" if self.recipe else "")
