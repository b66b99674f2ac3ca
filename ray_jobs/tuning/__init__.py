"""tune.py's parts: the search space (space), a trial (trial), the results (results)."""
