"""One router per OpenAI resource: files, fine_tuning, models, chat, completions."""
