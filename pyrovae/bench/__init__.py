"""``pyrovae bench``: the suite's training step timed against one hand-written PyTorch VAE."""
