"""On-device models: the offline embedder and the llama.cpp LLM, with the default model registry."""

from mneme.core import embedding as _registry
from mneme.models.embedder import MINILM_ID, MiniLMEmbedder, default_embedder

_registry.register(MINILM_ID, default_embedder)

__all__ = ["MINILM_ID", "MiniLMEmbedder", "default_embedder"]
