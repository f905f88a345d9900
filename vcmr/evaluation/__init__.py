"""Evaluation protocols: song-level tagging (:mod:`.tagging`) and their reports.

Evaluation reads trained models through their exports and checkpoints; it never
imports a training stage.
"""
