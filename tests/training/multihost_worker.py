"""Worker for the multi-host test: a few pre-training steps on fixed global batches.

    python tests/training/multihost_worker.py NUM_PROCESSES PROCESS_ID PORT

Each process feeds its slice of every global batch to its local devices (as the per-process input
pipeline does); with one process it feeds the whole batch. Process 0 prints the losses.
"""

import sys

import jax

num_processes, process_id, port = (int(a) for a in sys.argv[1:4])
if num_processes > 1:
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                               num_processes=num_processes, process_id=process_id)

from helpers import labelled_batch, shard, tiny_config  # noqa: E402

from hpe_jax.training import factory, optim, steps  # noqa: E402

GLOBAL_BATCH = 8
config = tiny_config()
model = factory.build_model(config.model, "batch")
tx = optim.make_optimizer(optim.pretrain_schedule(1e-3, [], 0.1))
state = steps.replicate(factory.initial_state(config, model, tx))
step = steps.bind_pretrain(model, config)
per_process = GLOBAL_BATCH // jax.process_count()
losses = []
for i in range(3):
    batch = labelled_batch(GLOBAL_BATCH, seed=i)
    mine = {k: v[process_id * per_process:(process_id + 1) * per_process]
            for k, v in batch.items()}
    rng = jax.random.split(jax.random.PRNGKey(i), jax.local_device_count())
    state, metrics = step(state, shard(mine, jax.local_device_count()), rng)
    losses.append(float(metrics["loss"][0]))
if jax.process_index() == 0:
    print("LOSSES", " ".join(f"{x:.8e}" for x in losses), flush=True)
