"""Radius search over 64-bit hashes by multi-index hashing (Norouzi et al., CVPR 2012).

Each hash is cut into four 16-bit chunks, and each chunk position gets a sorted
table. If two hashes differ in at most r bits, then (pigeonhole) at least one of
their four chunks differs in at most r // 4 bits. So probing, in every table, the
chunk values within r // 4 bits of the query's finds every true neighbour; the
candidates are then checked on the full 64 bits. With r = 10 that is 4 x 137 probes
per query instead of one comparison per stored hash, all vectorised with numpy.

The pigeonhole bound holds for any r, but the index only saves work while r // 4 is
small: at r // 4 = 6 (r = 24) the probes cover 14893 of the 65536 values of each
chunk, so on random hashes a query inspects 4 x 23% = 91% of the stored hashes, no
fewer than comparing all pairs, and two unrelated random hashes already lie within
24 bits with probability 3%. Hence MAX_RADIUS = 23 (r // 4 = 5: 42% at worst).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

CHUNKS = 4
CHUNK_BITS = 16
MAX_RADIUS = 23
BUDGET = 1 << 18  # probes or candidates handled at once; each costs about 60 bytes while in flight


def _masks(radius: int) -> np.ndarray:
    """All 16-bit values with at most `radius` bits set."""
    values = np.arange(1 << CHUNK_BITS, dtype=np.uint16)
    return values[np.bitwise_count(values) <= radius]


def _chunk(codes: np.ndarray, c: int) -> np.ndarray:
    return ((codes >> np.uint64(CHUNK_BITS * c)) & np.uint64(0xFFFF)).astype(np.uint16)


def _candidates(starts: np.ndarray, order: np.ndarray, keys: np.ndarray, masks: np.ndarray,
                budget: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(query, stored) index pairs whose chunk is `key ^ mask` for some mask, at most `budget` pairs at a time:
    the number of pairs grows with the stored hashes sharing a chunk value, not only with the probes."""
    probes = (keys[:, None] ^ masks[None, :]).ravel().astype(np.int64)  # int64: starts[0xFFFF + 1] must be reached
    lo = starts[probes]
    counts = starts[probes + 1] - lo
    hit = np.flatnonzero(counts)
    lo, counts = lo[hit], counts[hit]
    ends = np.cumsum(counts)
    firsts = ends - counts
    # numbering all candidates in a row, candidate k of probe p (firsts[p] <= k < ends[p]) is order[k + shift[p]]
    shift = lo - firsts
    total = int(ends[-1]) if len(ends) else 0
    for a in range(0, total, budget):
        b = min(a + budget, total)
        # the probes whose candidates overlap [a, b): one probe's may be cut at either end
        p0, p1 = np.searchsorted(ends, [a, b - 1], side="right")
        p1 += 1
        n = np.minimum(ends[p0:p1], b) - np.maximum(firsts[p0:p1], a)
        yield np.repeat(hit[p0:p1] // len(masks), n), order[np.arange(a, b) + np.repeat(shift[p0:p1], n)]


class HammingIndex:
    def __init__(self, codes: np.ndarray):
        self.codes = np.ascontiguousarray(codes, dtype=np.uint64)
        # per chunk position: stored indices grouped by chunk value, and where each value's group starts
        self.tables = []
        for c in range(CHUNKS):
            keys = _chunk(self.codes, c)
            order = np.argsort(keys, kind="stable")
            starts = np.zeros((1 << CHUNK_BITS) + 1, dtype=np.int64)
            starts[1:] = np.cumsum(np.bincount(keys, minlength=1 << CHUNK_BITS))
            self.tables.append((starts, order))

    def __len__(self) -> int:
        return len(self.codes)

    def search(self, queries: np.ndarray, radius: int,
               budget: int = BUDGET) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All (query, stored) pairs within `radius` bits, sorted: query indices, stored indices, distances.

        Probes and candidates are handled in pieces of at most `budget` items (a piece holds at least one
        query's probes, 6885 at radius 23), so the memory beyond the result stays bounded whatever the radius
        and however many stored hashes share a chunk value."""
        if not 0 <= radius <= MAX_RADIUS:
            raise ValueError(f"radius must be at most {MAX_RADIUS} bits (and not negative): beyond it the "
                             "multi-index search inspects about every stored hash for each query")
        queries = np.ascontiguousarray(queries, dtype=np.uint64)
        sub = radius // CHUNKS
        masks = _masks(sub)
        step = max(1, budget // len(masks))  # queries per piece
        out_q, out_d, out_dist = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0, np.int16)]
        for start in range(0, len(queries), step):
            q = queries[start : start + step]
            found_q, found_d = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
            for c, (starts, order) in enumerate(self.tables):
                for qi, di in _candidates(starts, order, _chunk(q, c), masks, budget):
                    x = q[qi] ^ self.codes[di]
                    keep = np.bitwise_count(x) <= radius
                    # a pair close in several chunks is found in each: keep it only from the first
                    for e in range(c):
                        keep &= np.bitwise_count(_chunk(x, e)) > sub
                    found_q.append(qi[keep])
                    found_d.append(di[keep])
            qi, di = np.concatenate(found_q), np.concatenate(found_d)
            s = np.lexsort((di, qi))
            qi, di = qi[s], di[s]
            out_q.append(qi + start)
            out_d.append(di)
            out_dist.append(np.bitwise_count(q[qi] ^ self.codes[di]).astype(np.int16))
        return np.concatenate(out_q), np.concatenate(out_d), np.concatenate(out_dist)
