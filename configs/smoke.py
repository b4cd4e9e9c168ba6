"""A seconds-long smoke run on the tiny synthetic_hands configs (tests and install checks).

    python -m tools.train --config=configs/smoke.py --workdir=/tmp/smoke \
        --config.data.data_dir=/tmp/tfds

Needs `synthetic_hands/source_tiny` and `synthetic_hands/target_tiny` prepared in data_dir
(python -m tools.tfds_build synthetic_hands/source_tiny --data_dir=/tmp/tfds, same for
target_tiny). 32-px crops, a ResNet-18 at 1/8 width: 4 pre-training + 4 fine-tuning steps.
Expected result: the run finishes and writes a checkpoint; its metrics mean nothing.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    c = default.get_config()
    c.data.source = "synthetic_hands/source_tiny"
    c.data.target = "synthetic_hands/target_tiny"
    c.data.input_size = 32          # output_size 8 and uv_scale 8, derived (config_checks)
    c.model.resnet_depth = 18
    c.model.width = 0.125
    c.model.deconv_features = 16
    c.model.proj_hidden = 16
    c.model.proj_dim = 8
    c.model.scan_blocks = False     # the unrolled layout (a ResNet-18 compiles fast anyway)
    c.pretrain.batch_size = 16      # 64 examples: 4 steps an epoch
    c.pretrain.epochs = 1
    c.pretrain.decay_epochs = ()
    c.pretrain.lr = 1e-3
    c.finetune.epochs = 1
    c.finetune.batch_size = 8
    c.finetune.unlabelled_batch_size = 16
    c.finetune.lr = 1e-4
    c.finetune.ema_decay = 0.9
    c.log_every_steps = 1
    c.checkpoint_every_steps = 100
    c.eval_batch_size = 16
    return c
