"""LAMB against the published algorithm, and the schedule against transformers'."""

import math

import pytest
import torch
import transformers

from albert_pytorch.optim import Lamb, build_optimizer, linear_schedule


def published_lamb(weights, grads_per_step, lr, betas, eps, weight_decay):
    """LAMB as You et al. (2019), Algorithm 2, one tensor at a time in float64, with the trust ratio
    ||w|| / ||update|| (1 where either norm is 0)."""
    beta1, beta2 = betas
    weights = [w.double().clone() for w in weights]
    m = [torch.zeros_like(w) for w in weights]
    v = [torch.zeros_like(w) for w in weights]
    for t, grads in enumerate(grads_per_step, start=1):
        for i, (w, g) in enumerate(zip(weights, grads, strict=True)):
            g = g.double()
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            m_hat, v_hat = m[i] / (1 - beta1**t), v[i] / (1 - beta2**t)
            update = m_hat / (v_hat.sqrt() + eps) + weight_decay * w
            w_norm, u_norm = w.norm().item(), update.norm().item()
            trust = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
            weights[i] = w - lr * trust * update
    return weights


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_lamb_follows_the_published_algorithm(weight_decay):
    generator = torch.Generator().manual_seed(0)
    # a matrix, a vector, and a zero tensor (whose trust ratio falls back to 1)
    initial = [torch.randn(5, 3, generator=generator), torch.randn(7, generator=generator), torch.zeros(4)]
    steps = [[torch.randn(w.shape, generator=generator) for w in initial] for _ in range(6)]
    params = [torch.nn.Parameter(w.clone()) for w in initial]
    optimizer = Lamb(params, lr=0.01, betas=(0.9, 0.999), eps=1e-6, weight_decay=weight_decay)
    for grads in steps:
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        optimizer.step()
    expected = published_lamb(initial, steps, 0.01, (0.9, 0.999), 1e-6, weight_decay)
    for ours, theirs in zip(params, expected, strict=True):
        assert (ours.detach().double() - theirs).abs().max() < 1e-6


def test_lamb_resumes_from_its_state_dict():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    clone = torch.nn.Linear(4, 3)
    clone.load_state_dict(model.state_dict())
    first, second = (build_optimizer("lamb", m, 1e-2, 0.01, torch.device("cpu")) for m in (model, clone))
    data = [torch.randn(8, 4) for _ in range(4)]
    for i, x in enumerate(data):
        if i == 2:  # the second optimizer is rebuilt from a saved state halfway through
            saved = second.state_dict()
            second = build_optimizer("lamb", clone, 1e-2, 0.01, torch.device("cpu"))
            second.load_state_dict(saved)
        for m, opt in ((model, first), (clone, second)):
            m(x).square().mean().backward()
            opt.step()
            opt.zero_grad()
    assert torch.equal(model.weight, clone.weight)


@pytest.mark.parametrize("warmup,total", [(0, 10), (3, 10), (10, 40), (1, 2)])
def test_schedule_decays_as_transformers_does_and_warms_up_without_a_zero_step(warmup, total):
    def rates(make, steps=total):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        scheduler = make(optimizer)
        values = []
        for _ in range(steps):
            values.append(scheduler.get_last_lr()[0])
            optimizer.step()
            scheduler.step()
        return values

    ours = rates(lambda o: linear_schedule(o, warmup, total))
    theirs = rates(lambda o: transformers.get_linear_schedule_with_warmup(o, warmup, total))
    # after warm-up: the same linear decay to zero at `total`, step for step
    assert ours[warmup:] == pytest.approx(theirs[warmup:])
    # during warm-up: transformers' ramp over warmup + 1 steps, one step on, so that the first step
    # already learns (transformers' first step has learning rate 0) and the peak comes at step `warmup`
    shifted = rates(lambda o: transformers.get_linear_schedule_with_warmup(o, warmup + 1, total + 1), total + 1)
    assert ours[:warmup] == pytest.approx(shifted[1:warmup + 1])
    assert all(rate > 0 for rate in ours) and ours[warmup] == max(ours) == 1.0
    assert math.isclose(ours[-1], 1 / (total - warmup))
