"""`ncaer check-leakage`: prove a static dataset has no train/test leakage, or show where it has.

imageset (ncaer.dataset) -> hashing -> hamming_index search per split pair -> optional
embedding check -> check (pairs, summary) -> report; fix writes a cleaned split.
"""
