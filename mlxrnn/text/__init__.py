"""Text data: tokenizers (characters, words, byte-level BPE), vocabularies, corpus files,
prepared corpora (tokenized once into memory-mapped id files) and language-model batching.

Below the language-model layer: it knows tokens and ids, not models."""
