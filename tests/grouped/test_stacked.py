"""Stacked: K models called as one give each member's own logits and its own input gradient."""

import torch
import torch.nn.functional as F

from imbadv.attacks.core import input_gradient
from imbadv.grouped.stacked import Stacked, stack_rows


def test_each_member_gets_its_own_logits_and_input_gradient(vgg_members):
    models, gen = vgg_members(), torch.Generator().manual_seed(5)
    xs = [torch.rand(4, 3, 32, 32, generator=gen) for _ in models]
    ys = [torch.randint(0, 10, (4,), generator=gen) for _ in models]
    stacked = Stacked.of(models).eval()
    logits = stacked(stack_rows(xs)).reshape(3, 4, 10)
    grads = input_gradient(stacked, stack_rows(xs), stack_rows(ys)).reshape(3, 4, 3, 32, 32)
    for k, model in enumerate(models):
        with torch.no_grad():
            alone = model(xs[k])
        torch.testing.assert_close(logits[k], alone, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(grads[k], input_gradient(model, xs[k], ys[k]))
        assert F.cross_entropy(logits[k], ys[k]).isfinite()


def test_rows_that_do_not_split_into_members_are_refused(vgg_members):
    stacked = Stacked.of(vgg_members(2))
    try:
        stacked(torch.rand(3, 3, 32, 32))
    except ValueError as e:
        assert "3 rows do not split into 2 members" in str(e)
    else:
        raise AssertionError("3 rows for 2 members were accepted")
