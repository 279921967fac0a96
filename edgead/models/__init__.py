"""Model registry: ``edgead`` never special-cases a model name outside its registration."""

from edgead.models.base import AnomalyModel, available_models, build_model, model_class, register_model

__all__ = ["AnomalyModel", "available_models", "build_model", "model_class", "register_model"]
