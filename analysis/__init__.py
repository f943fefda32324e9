"""What is learnt from many runs: Pareto frontiers, weight and activation geometry, path-wise rewinding, and the
HTML they are shown in. Pure functions of results and tensors; the drivers that apply them to a sweep dir
live in orchestrator/ (sweep_analysis, sweep_geometry, sweep_rewind)."""
