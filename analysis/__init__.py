"""What is learnt from many runs: frontiers, geometry, rewinding (filled in by the analysis issues)."""
