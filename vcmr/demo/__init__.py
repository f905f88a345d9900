"""Generated demo data and the end-to-end demo pipeline.

Every command runs on generated data when its data setting says ``demo``; this package
is the one place that turns that word into files (:func:`prepare`), so training,
data and builder code never know about demos.
"""
