"""The exact-GELU activation's hand-written gradient: equal to autodiff's, and it keeps only x."""

import jax
import jax.numpy as jnp
import numpy as np

from xlmr_jax.modeling.layers import exact_gelu


def test_value_and_gradient_match_autodiff_of_the_erf_form():
    x = jnp.asarray(np.concatenate([np.linspace(-12, 12, 4001), np.random.default_rng(0).normal(0, 3, 4000)]),
                    jnp.float32)
    reference = jax.vmap(jax.grad(lambda v: jax.nn.gelu(v, approximate=False)))(x)
    ours = jax.vmap(jax.grad(exact_gelu))(x)
    # the same formula; a tolerance all the same, as the two may be fused and rounded differently
    np.testing.assert_allclose(np.asarray(exact_gelu(x)), np.asarray(jax.nn.gelu(x, approximate=False)),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(reference), rtol=2e-6, atol=1e-7)
    # the derivative's known values: 1/2 at 0, -> 1 far right, -> 0 far left
    np.testing.assert_allclose(float(jax.grad(exact_gelu)(0.0)), 0.5, rtol=1e-7)
    np.testing.assert_allclose(float(jax.grad(exact_gelu)(12.0)), 1.0, rtol=1e-7)
    assert abs(float(jax.grad(exact_gelu)(-12.0))) < 1e-20


def test_backward_keeps_only_the_input():
    """The arrays a vjp closure holds are what the backward pass keeps: x alone, where autodiff of
    the erf form keeps three (4, 8) arrays."""
    x = jnp.ones((4, 8), jnp.float32)
    ours = jax.tree.leaves(jax.vjp(exact_gelu, x)[1])
    autodiff = jax.tree.leaves(jax.vjp(lambda v: jax.nn.gelu(v, approximate=False), x)[1])
    assert [a.shape for a in ours] == [(4, 8)]
    assert [a.shape for a in autodiff].count((4, 8)) == 3


def test_bfloat16_in_bfloat16_out():
    x = jnp.linspace(-3, 3, 64, dtype=jnp.bfloat16)
    grads = jax.grad(lambda v: exact_gelu(v).astype(jnp.float32).sum())(x)
    assert grads.dtype == jnp.bfloat16
    reference = jax.grad(lambda v: jax.nn.gelu(v, approximate=False).sum())(x.astype(jnp.float32))
    np.testing.assert_allclose(np.asarray(grads, np.float32), np.asarray(reference), rtol=1e-2, atol=1e-2)
