"""One trial: base models and assets, training (DeepSpeed, the regimes), checkpoints and their exact
resume, and scoring checkpoints on the suites."""
