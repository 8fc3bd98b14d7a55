"""`python -m wsi_seg` runs the command line."""

from wsi_seg.cli import main

main(prog_name="wsi-seg")
