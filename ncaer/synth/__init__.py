"""`ncaer synth`: face crops composited on backgrounds, with clean reconstruction targets."""
