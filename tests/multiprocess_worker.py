"""One process of the two-process test (tests/test_multiprocess.py): 4 CPU devices of its own, a
mesh over all 8, a sharded load, a forward and two train steps; results written as files."""

import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import jax

jax.config.update("jax_default_matmul_precision", "highest")


def main(checkpoint: str, port: int, process_id: int, out_dir: str) -> None:
    import numpy as np
    import optax
    from jax.experimental import multihost_utils

    import xlmr_jax
    from xlmr_jax import distributed
    from xlmr_jax.sharding import make_mesh, shard_batch
    from xlmr_jax.training import make_train_step, save_train_state
    from xlmr_jax.weights.safetensors_io import SafetensorsReader

    distributed.initialize(f"127.0.0.1:{port}", 2, process_id, timeout_s=120)
    assert jax.process_count() == 2 and len(jax.devices()) == 8 and len(jax.local_devices()) == 4
    batch = dict(np.load(os.path.join(out_dir, "batch.npz")))
    rows = slice(4 * process_id, 4 * (process_id + 1))  # this process's rows of the global batch
    local = {k: v[rows] for k, v in batch.items()}

    mesh = make_mesh("fsdp=8")
    model = xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(checkpoint, mesh=mesh, rules="fsdp")
    bytes_read = SafetensorsReader.bytes_read_total

    logits = xlmr_jax.jit_forward(model, mesh=mesh)(local["input_ids"], local["attention_mask"]).logits
    logits = multihost_utils.process_allgather(logits, tiled=True)
    state, train_step = make_train_step(model, optax.sgd(0.1))
    losses = []
    for _ in range(2):
        state, loss = train_step(state, shard_batch(local, mesh))
        losses.append(float(np.asarray(loss.addressable_data(0))))  # replicated: every shard is the loss
    kernel = state.params["roberta"]["encoder"]["layer"]["intermediate"]["dense"]["kernel"][...]
    kernel = multihost_utils.process_allgather(kernel, tiled=True)
    save_train_state(os.path.join(out_dir, "train-state"), state)  # collective: each its shards
    from xlmr_jax.training import model_from_state

    model_from_state(model, state).save_pretrained(os.path.join(out_dir, "export"), format="pytorch")
    np.savez(os.path.join(out_dir, f"process{process_id}.npz"), logits=logits, kernel=kernel)
    with open(os.path.join(out_dir, f"process{process_id}.json"), "w") as fh:
        json.dump({"bytes_read": bytes_read, "losses": losses}, fh)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
