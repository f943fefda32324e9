"""MLflow: the runs of a sweep, its trials and the base model; the Tune callback that syncs them; the
tracking server and the browser views (MLflow UI, optuna-dashboard)."""
