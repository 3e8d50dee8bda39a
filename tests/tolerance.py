"""Float tolerances derived from what a test computes, so they hold on every CPU kind.

Two runs of the same training whose arithmetic differs only in summation order (vmap's grouped
convolutions, inductor's fused kernels, another CPU's oneDNN kernels) see gradients that differ by
float32 rounding: at most `GRADIENT_RTOL` of the largest gradient coordinate, `GRADIENT_SCALE` at
most for the small cross-entropy models of the tests (measured here: <= 7e-6 relative, largest
coordinate < 2). Under SGD a step moves a weight by lr x gradient, and momentum m carries one
step's difference into later steps at most 1 / (1 - m) times in all, so after `steps` steps two
such runs stay within `sgd_bound`. A real divergence (other data order, another initialization, a
missed step) moves weights by lr x a whole gradient: >= 4e-3 for the tests' models (measured).

RMSprop is unfit for such comparisons: it divides by the running RMS of the gradient, so where a
gradient is within rounding of zero its rounding becomes a whole step of lr / sqrt(1 - rho)
(3.2 lr at Keras' rho 0.9): one CPU measured 7e-6 where another measured 3.5e-3 for the same test.
"""

GRADIENT_RTOL = 1e-5
GRADIENT_SCALE = 10.0


def sgd_bound(lr: float, steps: int, momentum: float = 0.0) -> float:
    """The largest weight difference rounding alone can make between two SGD runs of `steps`."""
    return lr * steps * GRADIENT_RTOL * GRADIENT_SCALE / (1.0 - momentum)
