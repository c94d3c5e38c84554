"""openft: a self-hosted fine-tuning platform that speaks the OpenAI API.

Nothing is built at import time; settings are `openft.config.Settings()`, built by each entry point.
"""

__version__ = "0.1.0"
