"""Faces: detectors on onnxruntime (CenterFace, SCRFD), the choice of one subject per clip,
and the face crop and masked context rendered from a frame."""
