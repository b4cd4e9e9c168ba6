"""The paper's settings (DM-HPE, CVPR 2023): ResNet-101, 256 px in / 64 px out, batch 140.

    python -m tools.train --config=configs/default.py --workdir=runs/default \
        --config.data.source=rhd --config.data.target=stb

Pre-trains for 60 epochs (lr 2.5e-4, x0.1 after epochs 40 and 50), then fine-tunes 6 epochs at
2.5e-5 with pseudo-labels and self-distillation. On synthetic_hands it runs as is; the
configs/rhd_to.py:<target> sets the real datasets. Expected result: the paper's own tables; no
full run of it is recorded in docs/results.md (it needs a GPU). The fields where this code fills
in or departs from the paper: docs/method_choices.md.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.source = "synthetic_hands/source"   # labelled RGB + depth + mask (TFDS name)
    c.data.target = "synthetic_hands/target"   # unlabelled RGB (labels dropped on load)
    c.data.source_split = "train"
    c.data.target_split = "train"             # TFDS slicing works, e.g. "train[:15000]" for
                                               # FreiHAND/MVHand matched to STB's size
    c.data.eval_split = "test"                 # of the source and, by default, the target
    c.data.target_eval_split = ""              # the target's labelled split, "" = eval_split
                                               # (a real target's val: configs/real.py)
    c.data.image_folder = ""                   # the folder a folder-built target (image_folder,
                                               # hgc_real) is built from; read while building
    c.data.data_dir = ""                       # TFDS data_dir; "" = TFDS default
    c.data.input_size = 256
    c.data.output_size = 0                     # the decoder's heatmap side; 0 = derived at
                                               # start-up (training/config_checks.resolve) from
                                               # input_size and model.stem_pool / num_deconv
                                               # (64 here); an explicit value must agree with it
    c.data.depth_cube_mm = 300.0               # depth normalisation cube (pipeline.normalize_depth)
    # Augmentation (data/augment.py AugmentConfig; the paper gives no ranges): G for the labelled
    # positive pairs and the strong unlabelled view, the weak_* fields for the teacher's view.
    c.data.augment = ml_collections.ConfigDict(dict(
        rotation_deg=180.0, scale_range=(0.8, 1.2), translation=0.08,
        # T, the photometric part (RGB) and T_d (measured depth), on the same views.
        brightness=0.25, contrast=0.3, saturation=0.3, hue=0.05,
        blur_probability=0.3, blur_sigma=(0.3, 1.5), noise_std=0.04,
        depth_noise_mm=3.0, depth_hole_probability=0.5, depth_hole_fraction=0.1,
        weak_rotation_deg=15.0, weak_scale_range=(0.9, 1.1), weak_translation=0.04,
        # An occluder on the student's strong view only (not in the paper; 0 = off).
        strong_occlusion_probability=0.0, strong_occlusion_size=(0.2, 0.5),
        # Occluders and coloured sleeves on the labelled source images, labels kept (not in the
        # paper; 0 = off), in the phases data.source_occlusion_phases names.
        source_occlusion_probability=0.0, source_occlusion_size=(0.2, 0.5),
        sleeve_probability=0.0,
        # Procedural clutter behind the labelled source hand (needs its mask), with blobs in
        # the hand's colour (not in the paper; 0 = off); in the same phases.
        source_background_probability=0.0,
        # G mirrors a labelled crop left-right (a right hand becomes a left one), labels moved
        # with it (not in the paper; 0 = off).
        flip_probability=0.0))
    c.data.source_occlusion_phases = ("finetune",)

    c.model = ml_collections.ConfigDict()
    c.model.resnet_depth = 101
    c.model.width = 1.0
    c.model.deconv_features = 256
    c.model.proj_hidden = 512
    c.model.proj_dim = 128
    c.model.attention_eps = 1e-6
    c.model.beta_init = 1.0                    # soft-argmax sharpness beta's initial value (the
                                               # papers: learnable, initial value not given);
                                               # 1.0 over 10.0: docs/method_choices.md
    c.model.stem_pool = True                   # ResNet's max-pool after conv1 (torchvision)
    c.model.scan_blocks = False                # True: each encoder stage's identical blocks as
                                               # one nn.scan loop (the same function, compiled
                                               # once per stage, not per block): faster compiles,
                                               # slower GPU steps, so long runs keep it off; turn
                                               # it on to iterate (docs/method_choices.md). It
                                               # changes the encoders' variable layout (stacked
                                               # layer{s}_blocks, models/resnet.py).
    c.model.num_deconv = 3                     # decoder upsamplings (SimpleBaseline: 3); output
                                               # = input * 2**num_deconv / (32, or 16 without
                                               # the stem pool)
    c.model.deconv_impl = "auto"               # decoder's transposed convs: "transpose",
                                               # "subpixel" (the same function as a 3x3 conv +
                                               # depth-to-space; faster on XLA:CPU) or "auto"
                                               # (subpixel on CPU, transpose on GPU/TPU)
    c.model.conv_grad = "auto"                 # the convolutions' kernel gradients: "xla",
                                               # "stored" (x read as stored, not recomputed
                                               # in XLA:CPU's transposes: the same function;
                                               # models/conv.py) or "auto" (stored on x86
                                               # CPUs without AVX-512, where measured)
    c.model.dtype = "float32"                  # or "bfloat16" (params stay float32)
    c.model.bn_cross_device = True             # BatchNorm statistics over all devices
    c.model.init_from = ""                     # torchvision weights (tools/convert_torchvision):
                                               # a .npz/.pth path; "" or "scratch" = random init;
                                               # "imagenet" = wanted but not given, refused at
                                               # start-up with how to get them (configs/rhd_to.py:
                                               # the paper starts from ImageNet)
    c.model.init_variables = ""                # a directory of a whole network's variables
                                               # (training/factory.save_variables), e.g. the
                                               # demo's shipped pre-trained model

    c.loss = ml_collections.ConfigDict()
    c.loss.lambda_z = 50.0                     # SemiHand Eq. 2
    c.loss.uv_scale = 0.0                      # uv unit of l: 64 / output_size (64-px heatmap
                                               # pixels), keeping the paper's loss balance and
                                               # epsilon at any output size; 0 = derived at
                                               # start-up (1.0 here), explicit values must agree
    c.loss.heatmap_weight = 0.0                # auxiliary KL(Gaussian || soft-argmax map) on
                                               # labelled joints (objectives/heatmap.py); not in
                                               # the paper (0 = off); the CPU configs use it to
                                               # escape the mean pose
    c.loss.label_huber_delta = 0.0             # > 0: l on labelled joints is Huber-like, linear
                                               # beyond this distance (64-px-heatmap px, z
                                               # weighted in): far-off joints pull with a
                                               # constant force. 0 = the paper's squared l
    c.loss.label_huber_phases = ("pretrain", "finetune")  # where label_huber_delta applies
    c.loss.target_huber_delta = 0.0            # the same Huber form for l inside L_l and L_d
                                               # (pseudo-labels, the fused prediction): a wrong
                                               # pseudo-label's joint pulls with a bounded force.
                                               # 0 = the paper's squared l; the confidence C and
                                               # epsilon keep the squared l either way
    c.loss.heatmap_sigma = 1.0                 # its Gaussian's std, output-heatmap pixels
    c.loss.lambda_m = 100.0                    # mask L1 weight
    c.loss.lambda_dm = 50.0                    # depth-map L1: the paper's "lambda_d = 50"
    c.loss.lambda_c = 0.1                      # contrastive weight
    c.loss.temperature = 0.5
    c.loss.contrast_variant = "paper"          # "paper" (Eq. 3) or "simclr"
    c.loss.contrast_reduction = "mean"         # NT-Xent over anchors: "mean" (default: lambda_c
                                               # independent of the batch size) or "sum" (Eq. 3
                                               # literally: x batch size, 140 at the paper's)
    c.loss.contrast_mode = "ours"              # ours | intra | intra_cross | l1_align (Table 3)
    c.loss.use_depth = True                    # + M(y_D)      (Table 4 ablation switches)
    c.loss.use_fused = True                    # + M(y_F)
    c.loss.use_contrast = True                 # + L_c
    c.loss.lambda_l = 1.0                      # pseudo-label weight (Eq. 11)
    c.loss.lambda_dist = 0.2                   # distillation: the paper's "lambda_f = 0.2"
    c.loss.use_pseudo = True                   # + L_l
    c.loss.pseudo_on = "both"                  # L_l on "both" p_R and p_F, summed (default: the
                                               # fused path gets the target signal too), or on
                                               # "rgb" p_R only (the narrower reading of Eq. 10,
                                               # half the weight of the default)
    c.loss.use_distill = True                  # + L_d
    c.loss.pseudo_label_passes = 2             # r from the teacher's two passes (Eq. 8: p_R,
                                               # p_F and their corrections) or 1 (p_R and
                                               # rho(p_R) only: the ablation of the two passes)
    c.loss.template = "sampler"                # rho's bone lengths: "sampler" = the synthetic
                                               # sampler's hand (default: the shipped configs'
                                               # source) or "source_mean" = the mean bone lengths
                                               # of the source training split (the paper's
                                               # reading for real sources such as RHD; measured
                                               # once, cached in workdir/template.json)
    c.loss.epsilon = 1.5                       # keep pseudo-labels with C(r) <= epsilon, in units
                                               # of l (64-px-heatmap px^2 + 50 bone-units^2, mean
                                               # over joints); check the kept share it logs.
    c.loss.epsilon_quantile = 0.0              # > 0: epsilon is instead calibrated at the
                                               # switch to this quantile of the first teacher's
                                               # C on target images (training/loop.py
                                               # calibrated_epsilon); 0: the paper's fixed value
    c.loss.epsilon_calibration_batches = 20    # target batches measured for that
    c.loss.distill_stop_gradient = True        # L_d = M(y_R, sg(y_F))

    c.pretrain = ml_collections.ConfigDict()
    c.pretrain.batch_size = 140                # global
    c.pretrain.epochs = 60
    c.pretrain.lr = 2.5e-4
    c.pretrain.fused_depth = "measured"        # the depth map behind the fused way's attention
                                               # in pre-training: "measured" (the paper: the
                                               # batch's depth) or "predicted" (the RGB way's own
                                               # predicted map, the input the teacher's second
                                               # pass gets in fine-tuning; one more depth-encoder
                                               # pass per step; docs/method_choices.md)
    c.pretrain.decay_epochs = (40, 50)
    c.pretrain.decay_factor = 0.1
    c.pretrain.decay = "step"                  # "step" (the paper: x decay_factor at each of
                                               # decay_epochs), or "cosine" / "linear" from lr
                                               # to lr * final_lr_factor over pre-training
    c.pretrain.final_lr_factor = 0.0           # where a cosine / linear decay ends
    c.pretrain.warmup_steps = 0

    c.finetune = ml_collections.ConfigDict()
    c.finetune.epochs = 6                      # 0 disables fine-tuning; epochs of the target split
    c.finetune.batch_size = 20                 # labelled synthetic batch per step (global)
    c.finetune.unlabelled_batch_size = 20      # unlabelled real batch per step (global)
    c.finetune.lr = 2.5e-5                     # constant over the stage (the paper); Adam's
                                               # moments carry over the switch
    c.finetune.teacher = "ema"                 # "ema" (this project) or "online" (the paper)
    c.finetune.ema_decay = 0.999
    c.finetune.adabn_batches = 0               # > 0: at the switch, the BatchNorm running
                                               # statistics (student and teacher) become the
                                               # mean batch statistics of this many target
                                               # batches (AdaBN), so the first pseudo-labels
                                               # are not made with source statistics; 0: off
                                               # (the paper is silent)
    c.finetune.bn_stats = "shared"             # which passes write BatchNorm running statistics
                                               # in fine-tuning: "shared" (source + both target
                                               # passes, the paper is silent) or "target" (the
                                               # target RGB pass; the depth encoder's from the
                                               # fused pass); see training/steps.py

    c.optim = ml_collections.ConfigDict()
    c.optim.b1 = 0.9
    c.optim.b2 = 0.99
    c.optim.clip_norm = 0.0                    # 0 = no clipping

    c.stop_after_steps = 0                     # >0: save and stop once this step is reached
                                               # (time-boxed jobs); re-run to continue
    c.checkpoint_every_steps = 1000
    c.keep_checkpoints = 3
    c.log_every_steps = 50
    c.eval_batch_size = 64
    return c
