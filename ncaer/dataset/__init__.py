"""The static dataset format that `ncaer build` writes and every other step reads: its layout
names, the manifest, and image sets read from any of the three layouts."""
