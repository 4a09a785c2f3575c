"""`ncaer build`: a labelled video corpus -> a static dataset with disjoint splits.

corpus (scan) -> units (split units, conflicts) -> plan -> engine (journal, worker
pool, one clip per job in `clip`) -> manifest -> disjointness verified.
"""
