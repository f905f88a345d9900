"""Music-video assembly: beat grid, shot timeline, clip choice, rendering."""
