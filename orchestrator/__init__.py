"""Turns a sweep config into trials and results: config, models, trainer, trial, CLI."""
