"""openft: a self-hosted fine-tuning platform that speaks the OpenAI API.

Nothing is built at import time; see `openft.config.get_settings()`.
"""

__version__ = "0.1.0"
