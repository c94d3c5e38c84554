"""Base models: which ids exist and how to get their weights as a local Hugging Face folder."""

from openft.models.registry import BaseModel, get_base_model, list_base_models, materialize, register_local

__all__ = ["BaseModel", "get_base_model", "list_base_models", "materialize", "register_local"]
