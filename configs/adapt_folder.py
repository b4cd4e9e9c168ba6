"""Adapt to your own photos: synthetic 'render' source -> a folder of unlabelled hand photos.

    python -m tools.train --config=configs/adapt_folder.py --workdir=runs/mine \
        --config.data.data_dir=runs/data --config.data.image_folder=/path/to/photos
    python -m tools.evaluate --config=configs/adapt_folder.py --workdir=runs/mine \
        --config.data.data_dir=runs/data          # needs a labelled test.json in the folder

The folder's layout (photos, optional boxes.json / boxes.csv, optional labelled test.json) is
described in hpe_jax/data/builders/image_folder.py and docs/usage.md, "Adapt to your own
images". tools.train renders the synthetic source and builds the folder into data_dir on first
use. Sizes are the demo's (configs/demo.py): a small network that trains in minutes on a CPU.
Expected result: depends on your photos; evaluate with a labelled test.json to measure it.
"""

import ml_collections

from configs import demo


def get_config() -> ml_collections.ConfigDict:
    c = demo.get_config()
    c.data.target = "image_folder"
    c.data.target_split = "train"           # the unlabelled photos
    c.data.eval_split = "test"              # the folder's test.json (hand_folder schema)
    c.data.image_folder = ""                # the folder of photos (the builder's manual_dir);
                                            # only read while image_folder is not yet built
    # Fine-tuning runs in epochs of the photo folder: a few hundred photos at batch 16 are only
    # a few dozen steps an epoch, so take several (the demo's 250 steps need 4,000 photos).
    c.finetune.epochs = 5
    return c
