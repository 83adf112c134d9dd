"""Test-wide settings: 8 forced CPU devices (before jax is imported) and exact fp32 matmuls."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The training commands run in-process here: keep this long-lived process's malloc as it is
os.environ.setdefault("XLMR_JAX_KEEP_HOST_MEMORY", "0")

import jax
import pytest

jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(scope="session")
def reference_checkpoint(tmp_path_factory):
    """(torch model, checkpoint dir) for a tiny randomised reference model, built once per session."""
    from reference_models import build_reference, save_reference

    built = {}

    def get(layout: str, arch: str, seed: int = 0, **overrides):
        key = (layout, arch, seed, tuple(sorted(overrides.items())))
        if key not in built:
            model = build_reference(layout, arch, seed=seed, **overrides)
            directory = tmp_path_factory.mktemp(f"{arch}-{layout}")
            built[key] = (model, save_reference(model, directory))
        return built[key]

    return get


@pytest.fixture(scope="module")
def models(reference_checkpoint):
    """`models(arch, **config_overrides)`: our model of `arch` loaded from a tiny reference checkpoint."""
    import xlmr_jax

    def load(arch, **overrides):
        _, path = reference_checkpoint("xlm-roberta", arch, **overrides)
        return getattr(xlmr_jax, arch).from_pretrained(path)

    return load
