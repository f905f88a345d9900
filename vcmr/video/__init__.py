"""Video layer: probing, streaming frame sampling, scene detection, frame encoders (CLIP).

No Lightning here. Heavy pieces (open_clip, transformers, PySceneDetect) are imported by the
modules that need them: :mod:`vcmr.video.probe`, :mod:`vcmr.video.frames`,
:mod:`vcmr.video.scenes`, :mod:`vcmr.video.encoders`, :mod:`vcmr.video.writer`.
"""
