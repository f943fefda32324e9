"""What is measured on a model: tasks as data, scorers, suites (target and retention)."""
