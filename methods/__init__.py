"""Every finetuning method behind one registry (`methods.registry`): build, count, budget, interpolate."""
