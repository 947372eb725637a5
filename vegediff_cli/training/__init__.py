"""Training loops and the data they read (real sequences, augmentation, checkpoints)."""
