"""The model adapter: the only package that imports torch, transformers,
sentence-transformers and tokenizers."""
