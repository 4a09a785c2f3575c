"""Video input: frame-exact decoding and the choice of frames per segment."""
