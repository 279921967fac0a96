"""One bundle's INT8 quantizer: recipe, calibration settings and calibration images bound once.

The build's search (PTQ, bias correction, QAD, fallback candidates) and the diagnostic scripts quantize
through it, so each quantizes the same graph the same way: the bundle's FP32 graph, its INT8 scopes, the
input put exactly on the INT8 grid, kept nodes in FP16 only inside the FP16 scopes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgead.bundle import Bundle
from edgead.calibration import CalibSettings, load_recipes, pick_recipe, with_anomalies
from edgead.precision.int8 import to_int8


@dataclass(frozen=True, eq=False)
class Quantizer:
    bundle: Bundle
    recipe_name: str
    recipe: dict
    settings: CalibSettings
    calib: np.ndarray  # the calibration normals (model input tensors)
    images: np.ndarray  # what ranges are calibrated on: ``calib``, plus synthetic anomalies and other light on shares
    source: np.ndarray  # images[j] was made from calib[source[j]]

    @classmethod
    def make(cls, b: Bundle, recipe_name: str, recipe: dict, settings: CalibSettings, calib: np.ndarray) -> Quantizer:
        images, source = with_anomalies(calib, b.preprocess, settings.synthetic_fraction, settings.seed,
                                       settings.relit_fraction)
        return cls(b, recipe_name, recipe, settings, calib, images, source)

    @classmethod
    def default(cls, b: Bundle, recipe_name: str, data: Path | None = None) -> Quantizer:
        """The build's defaults: recipes.yaml and the bundle's calibration set (cached under the bundle)."""
        from edgead.build import calibration_set

        recipes = load_recipes()
        recipe = pick_recipe(recipes, recipe_name)
        settings = CalibSettings.from_recipes(recipes)
        calib, _ = calibration_set(b, settings, data)
        return cls.make(b, recipe_name, recipe, settings, calib)

    @property
    def ranges_file(self) -> str:
        return f"ranges.{self.settings.method}.json"

    def __call__(self, dst: Path, work: Path, keep_float: list[str] | tuple = ()) -> dict:
        """The Q/DQ graph at ``dst`` (``int8.to_int8``); ``work`` holds the float graph and ranges (made on first
        use, reused after: a tuned float graph written there is quantized with its own ranges)."""
        b = self.bundle
        return to_int8(b.onnx("fp32"), dst, self.recipe_name, self.recipe, self.settings, self.images, b.input_name,
                       b.input_shape[0], b.precision_scopes["int8"], work, keep_float=list(keep_float),
                       normalization=(b.preprocess.mean, b.preprocess.std), fp16_scopes=b.precision_scopes["fp16"])
