"""StableAdamW under FSDP2 sharding clips each tensor by its whole-tensor statistic, as on one process;
FSDP2Strategy trains MLMModule (manual optimisation, micro-batches) like one process does.

Two gloo processes on the CPU shard a small model with ``fully_shard``; each rank takes half of every
global batch, as DDP would. The sharded run must match a hand-written single-process reference of the
recipe's rule, and must not match the same rule applied to each shard on its own (which is what a naive
optimizer computes from the local DTensor shards): the data spike some rows' gradients so that the update
clipping triggers and the shards' statistics differ.
"""

from __future__ import annotations

import functools

import lightning as L
import pytest
import torch
import torch.distributed as dist
from helpers import (
    TINY,
    FixedSteps,
    fit_on_cpu,
    free_port,
    leave_process_group,
    sample_batches,
    spawn_ranks,
    torchrun_env,
)
from torch import nn

from mmbert.train import MLMModule
from mmbert.train.optim import StableAdamW, param_groups
from mmbert.train.strategies import FSDP2Strategy, fsdp_strategy

LR, BETAS, EPS, WD = 1e-2, (0.9, 0.95), 1e-8, 0.1
WORLD = 2
STEPS = 4


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    # 33 rows: uneven shards (17 + 16); the LayerNorm and biases are rank-1 tensors without decay.
    return nn.Sequential(nn.Linear(12, 33), nn.LayerNorm(33), nn.GELU(), nn.Linear(33, 10))


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    out = []
    for step in range(STEPS):
        x = torch.randn(8, 12, generator=gen)
        y = torch.randn(8, 10, generator=gen)
        if step >= 1:
            y[:, :2] += 50.0 * step  # a spike on the outputs of rank 0's rows: clipping, uneven by shard
        out.append((x, y))
    return out


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(model(x), y)


def _decays(name: str, p: torch.Tensor) -> bool:
    return p.ndim >= 2


def _reference(per_shard: int | None = None) -> tuple[dict[str, torch.Tensor], float]:
    """The recipe's rule by hand, on one process over the global batch; returns weights and min lr_t / lr.

    ``per_shard=w`` applies the clipping statistic to each of the ``w`` dim-0 chunks separately (the
    layout of ``fully_shard`` over ``w`` ranks): the wrong rule, kept to show the test can tell them apart.
    """
    model = _model()
    params = dict(model.named_parameters())
    m = {n: torch.zeros_like(p) for n, p in params.items()}
    v = {n: torch.zeros_like(p) for n, p in params.items()}
    min_ratio = 1.0
    for step, (x, y) in enumerate(_batches(), start=1):
        model.zero_grad()
        _loss(model, x, y).backward()
        with torch.no_grad():
            for n, p in params.items():
                g = p.grad
                m[n] = BETAS[0] * m[n] + (1 - BETAS[0]) * g
                v[n] = BETAS[1] * v[n] + (1 - BETAS[1]) * g * g
                v_hat = v[n] / (1 - BETAS[1] ** step)
                ratio = g * g / torch.clamp(v_hat, min=EPS * EPS)
                if per_shard:
                    scales = [chunk.mean().sqrt().clamp(min=1.0) for chunk in ratio.chunk(per_shard)]
                    sizes = [len(c) for c in ratio.chunk(per_shard)]
                    scale = torch.cat([s.expand(k) for s, k in zip(scales, sizes, strict=True)])
                    scale = scale.view(-1, *[1] * (p.ndim - 1))
                else:
                    scale = ratio.mean().sqrt().clamp(min=1.0)
                lr_t = LR / scale
                min_ratio = min(min_ratio, float((lr_t / LR).min()))
                wd = WD if _decays(n, p) else 0.0
                p.mul_(1 - lr_t / LR * wd)
                p.sub_(lr_t * (m[n] / (1 - BETAS[0] ** step)) / (v_hat.sqrt() + EPS))
    return {n: p.detach().clone() for n, p in params.items()}, min_ratio


def _init(rank: int, store: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", store=dist.FileStore(store, WORLD), rank=rank, world_size=WORLD)


def _optimizer_worker(rank: int, store: str, out: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    _init(rank, store)
    results = {}
    try:
        # (2,): FSDP over both ranks. (2, 1): HSDP, replicated over both, sharded over one: the
        # statistic must be reduced over the shard dimension only.
        for shape in [(WORLD,), (WORLD, 1)]:
            names = ("shard",) if len(shape) == 1 else ("replicate", "shard")
            mesh = init_device_mesh("cpu", shape, mesh_dim_names=names)
            model = _model()
            for layer in (model[0], model[3]):
                fully_shard(layer, mesh=mesh)
            fully_shard(model, mesh=mesh)
            opt = StableAdamW(param_groups(model, WD), lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
            calls: list[int] = []

            def counting(*args, _calls=calls, _all_reduce=dist.all_reduce, **kwargs):
                _calls.append(1)
                return _all_reduce(*args, **kwargs)

            per_step = []
            for x, y in _batches():
                half = len(x) // WORLD
                rows = slice(rank * half, (rank + 1) * half)  # DDP-like split of the global batch
                _loss(model, x[rows], y[rows]).backward()
                calls.clear()
                all_reduce, dist.all_reduce = dist.all_reduce, counting
                try:
                    opt.step()
                finally:
                    dist.all_reduce = all_reduce
                per_step.append(len(calls))
                opt.zero_grad(set_to_none=True)
            placements = [tuple(str(pl) for pl in p.placements) for p in model.parameters()]
            full = {n: p.full_tensor().detach().clone() for n, p in model.named_parameters()}
            results[shape] = {"weights": full, "all_reduces": per_step, "placements": placements}
        if rank == 0:
            torch.save(results, out)
    except BaseException:
        dist.destroy_process_group()
        raise
    leave_process_group()


@pytest.fixture(scope="module")
def sharded_runs(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("fsdp")
    out = tmp / "sharded.pt"
    spawn_ranks(_optimizer_worker, str(tmp / "store"), str(out), world=WORLD)
    return torch.load(out, weights_only=True)


def test_per_shard_clipping_would_differ_and_clipping_triggers():
    whole, min_ratio = _reference()
    shard, _ = _reference(per_shard=WORLD)
    assert min_ratio < 0.9, "the update clipping must trigger on at least one tensor"
    diff = max((whole[n] - shard[n]).abs().max().item() for n in whole)
    assert diff > 1e-3, "per-shard and whole-tensor clipping must give different weights here"


def test_stable_adamw_on_one_process_matches_the_reference():
    model = _model()
    opt = StableAdamW(param_groups(model, WD), lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    for x, y in _batches():
        _loss(model, x, y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    whole, _ = _reference()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), whole[n], rtol=1e-5, atol=1e-6, msg=n)


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(WORLD,), (WORLD, 1)], ids=["fsdp", "hsdp"])
def test_fully_sharded_stable_adamw_matches_one_process(sharded_runs, shape):
    run = sharded_runs[shape]
    assert all("S(0)" in pl or "Shard(dim=0)" in pl for pl in run["placements"]), run["placements"]
    whole, _ = _reference()
    shard, _ = _reference(per_shard=WORLD)
    for n, p in run["weights"].items():
        torch.testing.assert_close(p, whole[n], rtol=1e-5, atol=1e-6, msg=n)
    if shape == (WORLD,):
        # The sharded run is told apart from the per-shard rule (it would fail if clipping were local).
        assert max((run["weights"][n] - shard[n]).abs().max().item() for n in shard) > 1e-3
    assert run["all_reduces"] == [1] * STEPS, "the statistics of all tensors go in one all-reduce per step"


# ------------------------------------------------------------------ FSDP2Strategy with Lightning
MICRO = 4  # micro-batches per optimizer step over all ranks: two per rank on two ranks
LIGHTNING_STEPS = 2


def _fit(strategy, devices: int, batches: list[dict]) -> tuple[MLMModule, L.Trainer]:
    L.seed_everything(0)
    optimizer = functools.partial(StableAdamW, lr=1e-2, betas=BETAS, eps=EPS, weight_decay=WD)
    module = MLMModule(model_config=TINY, optimizer=optimizer)  # its own configure_model shards
    return module, fit_on_cpu(module, FixedSteps(batches, MICRO), LIGHTNING_STEPS, devices, strategy)


def _lightning_worker(rank: int, port: int, out: str, batches: list[dict], checkpointing: bool) -> None:
    torchrun_env(rank, WORLD, port, "test_fsdp")
    torch.set_num_threads(1)
    strategy = fsdp_strategy(
        fsdp_version=2, activation_checkpointing=checkpointing, process_group_backend="gloo"
    )
    module, trainer = _fit(strategy, WORLD, batches)
    from torch.distributed.tensor import DTensor

    layer_weight = next(module.net.parameters())
    sharded = all(isinstance(p, DTensor) for p in module.net.parameters())
    state = trainer.strategy.lightning_module_state_dict()  # full, gathered on rank 0 (a collective)
    if rank == 0:
        record = {"state": state, "tokens_seen": module.tokens_seen, "sharded": sharded}
        record["local_rows"] = layer_weight.to_local().shape[0]
        record["rows"] = layer_weight.shape[0]
        torch.save(record, out)
    leave_process_group()  # not a plain return: a torch abort at interpreter exit (see its docstring)


def test_fsdp_version_2_translates_the_fsdp1_options():
    strategy = fsdp_strategy(fsdp_version=2, sharding_strategy="SHARD_GRAD_OP", state_dict_type="sharded")
    assert isinstance(strategy, FSDP2Strategy)
    assert strategy.reshard_after_forward is False and strategy._save_distributed_checkpoint is True
    assert type(fsdp_strategy(sharding_strategy="FULL_SHARD")).__name__ == "FSDPStrategy"
    with pytest.raises(ValueError, match="sharding_strategy"):
        fsdp_strategy(fsdp_version=2, sharding_strategy="HYBRID_SHARD")
    with pytest.raises(ValueError, match="fsdp_version"):
        fsdp_strategy(fsdp_version=3)


@pytest.mark.slow
@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "activation_checkpointing"])
def test_fsdp2_strategy_trains_like_one_process(tmp_path, checkpointing):
    batches = sample_batches(MICRO * LIGHTNING_STEPS)
    one, _ = _fit("auto", 1, batches)  # all MICRO micro-batches of a step on one process
    out = tmp_path / "fsdp2.pt"
    spawn_ranks(_lightning_worker, free_port(), str(out), batches, checkpointing, world=WORLD)
    two = torch.load(out, weights_only=True)
    assert two["sharded"], "every parameter of the net must be a DTensor"
    assert two["local_rows"] < two["rows"], "and actually sharded"
    assert two["tokens_seen"] == one.tokens_seen == sum(int(b["num_tokens"]) for b in batches)
    L.seed_everything(0)
    init = MLMModule(model_config=TINY, optimizer=None).net.state_dict()
    reference = {f"net.{n}": t for n, t in one.net.state_dict().items()}
    assert set(two["state"]) >= set(reference)
    for name, tensor in reference.items():
        torch.testing.assert_close(two["state"][name], tensor, atol=2e-5, rtol=1e-4, msg=name)
    moved = [n for n, t in init.items() if not torch.equal(t, reference[f"net.{n}"])]
    assert len(moved) > len(init) // 2, "the runs must actually train"
