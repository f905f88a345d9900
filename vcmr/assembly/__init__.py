"""Music-video assembly: beat grid, shot timeline, clip choice, rendering.

``make_video(cfg)`` runs the whole chain (see :mod:`vcmr.assembly.pipeline` and
``docs/music_video.md``).
"""

from vcmr.assembly.pipeline import MakeVideoConfig, make_video

__all__ = ["MakeVideoConfig", "make_video"]
