"""Large-model language-model training: a GPT-style decoder sharded with FSDP2.

`model` holds the plain modules and named presets, `parallelize` how they are
sharded (FSDP2 or DDP), `checkpoint` the sharded checkpoints, `loop` the training
loop and `train` the entry point (`python -m lm.train`). Runs on a Ray cluster;
everything but `loop.train_func` and `train` needs torch only.
"""
