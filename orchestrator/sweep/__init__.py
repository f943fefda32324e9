"""The search: the plan and its space, placement on Ray, the Tune run with its searcher and early
stopping, where a trial trains, and what follows the search."""
