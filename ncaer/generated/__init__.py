"""Generated data whose content is known: videos that carry their frame index and known face
boxes, the demo corpus, and a labelled leakage benchmark. Tests, benchmarks and `ncaer demo`
use them; nothing here is downloaded."""
