"""Task weightings: given the current per-task losses, the total loss and one weight per task.

`combine(losses, shared=...) -> (total, {task: weight})`. A weighting is an nn.Module so that learned
weights (UW's log-variances, GradNorm's weights) are optimised and checkpointed with the method.
Weights come back as python floats (for the logs); `equal`, `dwa`, `gradnorm`, `rlw` and `otw` keep them
summing to the number of tasks K, as the papers define them (UW's exp(-s_k) do not).

Names: equal (the MTL baseline), dwa, uw, gradnorm, rlw (the baselines of the OKD paper's tables) and
otw (OKD's own, which needs the single-task losses: `combine(mtl_losses, reference=stl_losses)`).

A weighting is registered once, on its class: `@register_weighting(NAME, help=...)`, with `Options` its
dataclass of options (`option(default, help)` per field). That makes it a `--task-weighting` choice of
every method that has one, its fields `mtl-train` flags, and its options part of run.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from mtlkd.errors import ConfigError
from mtlkd.train.options import NoOptions, Options, option, parse_options

WEIGHTINGS: dict[str, type[Weighting]] = {}


def register_weighting(name: str, help: str):
    """Make the class a `--task-weighting NAME` choice, with `help` as its line in `mtl-train --help`; its
    `Options` dataclass gives its flags."""

    def wrap(cls):
        if name in WEIGHTINGS:
            raise ValueError(f"task weighting {name!r} is registered twice")  # a bug, not user input
        cls.name, cls.help = name, help
        WEIGHTINGS[name] = cls
        return cls

    return wrap


def weighting_names() -> tuple[str, ...]:
    return tuple(WEIGHTINGS)


def weighting_choices() -> dict[str, str]:
    """Name -> one-line help of every weighting: the `--task-weighting` choices as `mtl-train --help` shows them."""
    return {name: cls.help for name, cls in WEIGHTINGS.items()}


def weighting_class(name: str) -> type[Weighting]:
    if name not in WEIGHTINGS:
        raise ConfigError(f"--task-weighting {name}: unknown task weighting; known: {', '.join(WEIGHTINGS)}")
    return WEIGHTINGS[name]


def create_weighting(name: str, tasks: list[str], options: Any = None) -> Weighting:
    """`options`: the weighting's own options, a mapping or its Options."""
    return weighting_class(name)(tasks, options)


class Weighting(nn.Module):
    """Base class. `Options` is the dataclass of the weighting's own options (none by default)."""

    name = "base"
    help = ""
    Options: ClassVar[type] = NoOptions
    needs_reference = False  # True: combine() needs the single-task losses (only OKD has them)

    def __init__(self, tasks: list[str], options: Any = None):
        super().__init__()
        self.tasks = list(tasks)
        self.options = parse_options(self.Options, options, f"--task-weighting {self.name}")

    def combine(self, losses: dict[str, torch.Tensor], shared: list[nn.Parameter] | None = None,
                **context: Any) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def epoch_end(self, epoch_losses: dict[str, float]) -> None:
        """Called with the epoch's mean loss per task (DWA reads these)."""

    def after_step(self) -> None:
        """Called after each optimiser step (GradNorm renormalises here)."""


@register_weighting("equal", help="every task weight 1 (the MTL baseline)")
class EqualWeighting(Weighting):
    """The MTL baseline: every task weight 1."""

    def combine(self, losses, shared=None, **context):
        return sum(losses[t] for t in self.tasks), dict.fromkeys(self.tasks, 1.0)


def _all_ranks_mean(values: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of `values` over the processes of a distributed run (a copy of `values`
    otherwise), so that every process derives the same state from its own statistics. Every process
    must call it at the same point (a collective); `values` must be on the process's device."""
    import torch.distributed as dist

    values = values.detach().clone()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(values)
        values /= dist.get_world_size()
    return values


def _floats(tasks: list[str], weights: torch.Tensor) -> dict[str, float]:
    return {t: float(w) for t, w in zip(tasks, weights.detach().float().cpu().tolist(), strict=True)}


@dataclass
class DWAOptions(Options):
    dwa_temperature: float = option(2.0, "DWA's softmax temperature T (Liu et al.: 2).", metavar="T", positive=True)


@register_weighting("dwa", help="Dynamic Weight Average, from the ratio of each task's last two epoch losses")
class DynamicWeightAverage(Weighting):
    """Dynamic Weight Average (Liu et al., MTAN, CVPR 2019):

        lambda_k(t) = K exp(w_k(t-1) / T) / sum_i exp(w_i(t-1) / T),   w_k(t-1) = L_k(t-1) / L_k(t-2),

    where L_k(t) is task k's mean training loss over epoch t; T = 2 (`dwa_temperature`). Every weight is 1
    for the first two epochs, when there is no ratio yet. The weights are constant within an epoch and
    sum to K. Epochs whose losses arrive empty (OKD's single-task warm-up) do not count. The last two
    epochs' losses are buffers, so they are checkpointed and a resumed run continues exactly."""

    Options = DWAOptions

    def __init__(self, tasks, options=None):
        super().__init__(tasks, options)
        self.temperature = self.options.dwa_temperature
        k = len(self.tasks)
        self.register_buffer("history", torch.zeros(2, k, dtype=torch.float64))  # L(t-2), L(t-1)
        self.register_buffer("epochs_seen", torch.zeros((), dtype=torch.int64))
        self.register_buffer("weights", torch.ones(k, dtype=torch.float64))

    def combine(self, losses, shared=None, **context):
        weights = self.weights.to(losses[self.tasks[0]].dtype)
        total = sum(weights[i] * losses[t] for i, t in enumerate(self.tasks))
        return total, _floats(self.tasks, self.weights)

    def epoch_end(self, epoch_losses):
        if not all(t in epoch_losses for t in self.tasks):
            return
        current = torch.tensor([float(epoch_losses[t]) for t in self.tasks], dtype=torch.float64,
                               device=self.history.device)
        current = _all_ranks_mean(current)  # the epoch's mean over all processes' batches
        self.history[0] = self.history[1]
        self.history[1] = current
        self.epochs_seen += 1
        if int(self.epochs_seen) >= 2:
            ratio = self.history[1] / self.history[0].clamp_min(1e-12)
            self.weights.copy_(len(self.tasks) * torch.softmax(ratio / self.temperature, dim=0))


@register_weighting("uw", help="uncertainty weighting, learned log-variances (Kendall et al.)")
class UncertaintyWeighting(Weighting):
    """Homoscedastic uncertainty weighting (Kendall et al., CVPR 2018) in LibMTL's form, the one the
    weighting baselines of the tables are usually run with:

        total = sum_k L_k / (2 exp(s_k)) + s_k / 2,     s_k = log sigma_k^2, learned, initialised to -0.5,

    i.e. Kendall's regression form 1 / (2 sigma^2) L + log sigma applied to every task (so the initial
    weight is 1 / (2 e^-0.5) = 0.82). The reported weight of task k is 1 / (2 exp(s_k)); the weights do
    not sum to K."""

    INITIAL_LOG_VARIANCE = -0.5

    def __init__(self, tasks, options=None):
        super().__init__(tasks, options)
        self.log_vars = nn.Parameter(torch.full((len(self.tasks),), self.INITIAL_LOG_VARIANCE))

    def combine(self, losses, shared=None, **context):
        s = self.log_vars
        total = sum(losses[t] / (2 * torch.exp(s[i])) + s[i] / 2 for i, t in enumerate(self.tasks))
        return total, _floats(self.tasks, 1 / (2 * torch.exp(s)))


def last_shared_weight(shared: list[nn.Parameter]) -> nn.Parameter:
    """GradNorm's W: the last weight matrix (ndim >= 2) among the shared parameters, in registration
    order; for the ViT backbone that is the last block's second MLP linear (blocks[-1].mlp.fc2.weight),
    the last shared layer before the heads (the final LayerNorm after it has only 1-D parameters)."""
    matrices = [p for p in shared if p.requires_grad and p.dim() >= 2]
    if not matrices:
        raise ConfigError("gradnorm needs a shared weight matrix; this network shares none")
    return matrices[-1]


@dataclass
class GradNormOptions(Options):
    gradnorm_alpha: float = option(1.5, "GradNorm's asymmetry alpha (Chen et al.'s NYUv2 value: 1.5).",
                                   metavar="ALPHA")


@register_weighting("gradnorm", help="GradNorm, learned weights that balance the tasks' gradient norms")
class GradNorm(Weighting):
    """GradNorm (Chen et al., ICML 2018), alpha = 1.5 (`gradnorm_alpha`).

    Learned weights w_k (initialised to 1). W is the last shared layer (`last_shared_weight`). Per step:

        G_k = || d(w_k L_k) / dW ||_2 = |w_k| * || dL_k / dW ||_2
        r_k = (L_k / L_k(0)) / mean_j (L_j / L_j(0))    (L(0): the first step's losses, averaged over processes)
        L_grad = sum_k | G_k - const(mean_j(G_j) * r_k^alpha) |

    The network is trained by sum_k w_k L_k with w treated as constant; w is trained by L_grad alone.
    Both go through the trainer's single `loss.backward()`: `combine` computes dL_grad/dw at once with
    torch.autograd.grad (only the norms ||dL_k/dW|| touch the network's graph, as constants) and returns

        total = sum_k w_k.detach() L_k + (w . g - (w . g).detach()),    g = dL_grad/dw,

    whose value is sum_k w_k L_k and whose gradient with respect to w is exactly g. After each optimiser
    step (`after_step`) the weights are renormalised to sum to K."""

    Options = GradNormOptions

    def __init__(self, tasks, options=None):
        super().__init__(tasks, options)
        self.alpha = self.options.gradnorm_alpha
        k = len(self.tasks)
        self.weights = nn.Parameter(torch.ones(k))
        self.register_buffer("initial_losses", torch.zeros(k))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        self.last_grad: torch.Tensor | None = None  # dL_grad/dw of the last combine, for inspection

    def combine(self, losses, shared=None, **context):
        if not shared:
            raise ValueError("gradnorm needs the network's shared parameters (combine(losses, shared=...))")
        layer = last_shared_weight(list(shared))
        stacked = torch.stack([losses[t] for t in self.tasks]).float()
        if not bool(self.initialised):  # L(0), averaged over the processes of a distributed run
            self.initial_losses.copy_(_all_ranks_mean(stacked))
            self.initialised.fill_(True)
        norms = []
        for t in self.tasks:
            (grad,) = torch.autograd.grad(losses[t], layer, retain_graph=True, allow_unused=True)
            norms.append(torch.zeros((), device=stacked.device) if grad is None else grad.detach().float().norm())
        norms = torch.stack(norms)
        w = self.weights
        g = w.abs() * norms
        ratio = stacked.detach() / self.initial_losses.clamp_min(1e-12)
        r = ratio / ratio.mean().clamp_min(1e-12)
        target = (g.mean() * r.pow(self.alpha)).detach()
        grad_loss = (g - target).abs().sum()
        (w_grad,) = torch.autograd.grad(grad_loss, w)
        self.last_grad = w_grad.detach()
        carrier = (w * self.last_grad.to(w.dtype)).sum()
        total = sum(w[i].detach() * losses[t] for i, t in enumerate(self.tasks)) + (carrier - carrier.detach())
        return total, _floats(self.tasks, w)

    def after_step(self):
        with torch.no_grad():
            self.weights.mul_(len(self.tasks) / self.weights.sum())


@register_weighting("rlw", help="Random Loss Weighting, a softmax of a normal sample each step")
class RandomLossWeighting(Weighting):
    """Random Loss Weighting (Lin, Ye and Zhang, 2021): at every step the weights are a softmax of a
    standard-normal sample, drawn from torch's global generator (seeded by the trainer, so a run repeats).
    The paper's weights sum to 1; here they are multiplied by K so that they sum to K like the equal
    baseline's and the loss keeps the same scale."""

    def combine(self, losses, shared=None, **context):
        weights = len(self.tasks) * torch.softmax(torch.randn(len(self.tasks)), dim=0)
        ref = losses[self.tasks[0]]
        dev = weights.to(device=ref.device, dtype=ref.dtype)
        return sum(dev[i] * losses[t] for i, t in enumerate(self.tasks)), _floats(self.tasks, weights)


@dataclass
class OTWOptions(Options):
    otw_temperature: float = option(0.1, "OKD's online task weighting temperature T (the paper: 0.1).",
                                    metavar="T", positive=True)


@register_weighting("otw", help="OKD's online task weighting, from the multi- to single-task loss ratios")
class OnlineTaskWeighting(Weighting):
    """Online task weighting of OKD (Jacob et al., WACV 2023, eq. 3):

        lambda_i = N_t exp(m_i / T) / sum_j exp(m_j / T),   m_i = L_MTL^i / L_STL^i,   T = 0.1 (`otw_temperature`)

    from the current step's losses, without gradient (the weights are constants of the step). The
    single-task losses come as `combine(mtl_losses, reference=stl_losses)`; the weights sum to N_t."""

    needs_reference = True

    Options = OTWOptions

    def __init__(self, tasks, options=None):
        super().__init__(tasks, options)
        self.temperature = self.options.otw_temperature

    def compute_weights(self, losses: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            mtl = torch.stack([losses[t].detach().float() for t in self.tasks])
            stl = torch.stack([torch.as_tensor(reference[t]).detach().float().to(mtl.device) for t in self.tasks])
            ratio = mtl / stl.clamp_min(1e-12)
            return len(self.tasks) * torch.softmax(ratio / self.temperature, dim=0)

    def combine(self, losses, shared=None, reference=None, **context):
        if reference is None:
            raise ConfigError("--task-weighting otw needs single-task losses: use --method okd")
        weights = self.compute_weights(losses, reference)
        ref = losses[self.tasks[0]]
        dev = weights.to(dtype=ref.dtype)
        return sum(dev[i] * losses[t] for i, t in enumerate(self.tasks)), _floats(self.tasks, weights)
