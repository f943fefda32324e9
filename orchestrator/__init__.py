"""Turns a sweep config into trials and results. Rooms, lowest first: storage (the sweep dir), trials
(train, checkpoint, score), tracking (MLflow), results (front, report, rewind, export), sweep (the search
on Ray Tune), cli; on the foundation of config, files and process."""
