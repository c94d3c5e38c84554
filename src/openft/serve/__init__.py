"""Generation engine behind chat/completions: base model + many LoRA adapters, continuous batching,
streaming, stop strings, export. Knows nothing about HTTP (the API maps its items to OpenAI chunks).

Entry points: `openft.serve.engine.Engine`, the types in `openft.serve.types`,
`openft.serve.export.export_model`.
"""

from openft.serve.types import Delta, Finish, GenerationRequest, SamplingParams, Usage

__all__ = ["Delta", "Engine", "Finish", "GenerationRequest", "SamplingParams", "Usage"]


def __getattr__(name):  # Engine pulls in torch; import it only when asked for
    if name == "Engine":
        from openft.serve.engine import Engine

        return Engine
    raise AttributeError(name)
