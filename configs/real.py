"""`make real`: adaptation to real hand photographs without their labels (hgc_real).

    make real [REAL_DIR=../shared/data/hgc_real]
    python -m tools.demo --config=configs/real.py --workdir=runs/real \
        --config.data.image_folder=<hand-graph-cnn's data/real_world_testset>

Starts from the shipped pre-trained network (assets/demo_pretrained, synthetic data only; set
model.init_variables to the one `make reproduce` writes), fine-tunes on the set's unlabelled
`pool` photos with pseudo-labels and self-distillation (labelled synthetic source beside them),
and evaluates the mean pose, the pre-trained and the adapted network on the labelled `val`
photos (runs/real/report.md). Results and the settings' val numbers: docs/results.md.
"""

import ml_collections

from configs import demo


def get_config() -> ml_collections.ConfigDict:
    c = demo.get_config()
    c.data.target = "hgc_real"
    c.data.target_split = "pool"            # the photos without their labels
    c.data.target_eval_split = "val"        # labelled; for choosing and reporting only
    c.data.image_folder = ""                # the set's folder (make real: REAL_DIR)
    c.finetune.epochs = 10                  # 437 photos at batch 16: 27 steps an epoch
    return c
