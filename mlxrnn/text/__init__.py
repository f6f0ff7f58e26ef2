"""Text data: tokenizers, vocabularies, corpus files and language-model batching.

Below the language-model layer: it knows tokens and ids, not models."""
