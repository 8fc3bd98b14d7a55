"""The end-to-end biopsy demo as a runnable recipe.

    python pipelines/biopsy_demo.py [--workdir demo]

Same as `wsi-seg demo` (and `make demo`): synthesise 3 slides, tile 2 with Dask,
train the two-stage ESPNet recipe of configs/demo.yaml, predict and evaluate the
held-out slide, export its review folder. Run from the repository root.
"""

import sys

from wsi_seg.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]], prog_name="wsi-seg"))
