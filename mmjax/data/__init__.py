"""Data: tokenizers, augmentations, tensorflow-datasets I/O and the grain input pipeline."""
