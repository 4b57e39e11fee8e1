"""The CPU training step recorded once as a graph of tensor operations and replayed per batch.

On a CPU a Pyro step costs the networks' arithmetic plus Python: the plates and sample
statements through Pyro's effect handlers, the distribution objects, the objective's
bookkeeping (about 0.75 ms at batch 100, docs/performance.md). None of that Python changes
the numbers from one full batch to the next. So after a few eager steps the forward pass of
the step (the Pyro program under the objective, down to the loss) is recorded once, as the
operations it runs, with ``torch.fx``'s ``make_fx`` [1]; every later batch of the same
signature runs the recorded operations (a ``GraphModule``'s generated code) instead of the
program, then ``backward`` and the optimizer as before. This is the CPU analogue of
:mod:`pyrovae.training.cuda_graph`:

- the inputs of the recording are the batch's tensors and every parameter the optimizer
  holds (module parameters and ``pyro.param`` values), so the replay reads their current
  values and autograd reaches them as in the eager step; a module's buffers are read as the
  very tensors the modules hold;
- random draws are recorded as torch's random operations, so each replay draws fresh noise
  from the global generator, the same draws in the same order as the eager step;
- the recording run is the step's own forward pass (its loss is the one trained on), so
  recording costs no draw and changes nothing;
- what the eager step computes and nothing reads (a plate's index range, the detached copies
  Pyro's bookkeeping makes) is dropped from the recording (:func:`_prune`), every draw kept.

It is checked before use: on the previous batch, at the same random state, the replayed
loss and gradients must equal the eager step's to float rounding (the recording was made on
other data and other draws, so a value read on the host and frozen into the recording shows
up here, as do a ``torch.no_grad`` block or a custom autograd function, which the recording
does not keep). A step that reads a tensor's values on the host while recording (``.item()``,
``.tolist()``, ``.numpy()``), a recording that changes a tensor in place (batch norm's running
statistics), a failed recording or check: each switches the replay off for the run with a
one-line warning, and every step runs eagerly, as before.

A Python ``if`` or ``while`` on a tensor (``bool(t)``: a rejection sampler's "any entry left?")
is recorded as a branch: the recording keeps the way it went and returns ``t`` besides the
loss, and each replay checks that its own ``t`` goes the same way. Where it does not (the von
Mises-Fisher sampler's rare extra round), the replay's draws are given back (the random state
restored) and that step runs eagerly: the same draws and numbers as eager. A recording that
took the rare way (its replays missing in at least a quarter of the steps) is made again, at
most three times in a run.

Indexing with a mask computed from the data (``x[mask]``, ``nonzero``, ``masked_select``,
``unique``: an output whose size depends on values) is recorded as the operation itself, so a
replay selects afresh from its own batch: Pyro's neural spline flows (identity outside the
spline's box, ``outputs[outside] = inputs[outside]``) replay exactly. What cannot be replayed
is such a selection's *size* read in Python (``sel.shape[0]`` as a divisor or a new tensor's
shape): the recording keeps one batch's size. torch itself does so in one case: assigning a
selection of exactly one element (``outputs[outside] = inputs[outside]`` with one entry
outside the spline's box) views it as a scalar, a shape that fails on any other count. So where
the check of a recording with data-dependent operations fails, or a later replay of it raises
(the random state restored first, that step run eagerly), the step is recorded again on the
next batch and checked on this one, three recordings at most; then the warning names the
operations and every step runs eagerly.

>>> step = ReplayedStep(None, lambda batch, step: batch["x"].sum(), enabled=False)
>>> float(step({"x": torch.ones(3)}, 0))
3.0

References

[1] PyTorch, ``torch.fx.experimental.proxy_tensor.make_fx`` (tracing below autograd to aten
    operations).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Dict, Optional

import torch

from pyrovae.infer.importance import preserved_rng
from pyrovae.training.cuda_graph import static_step


class HostRead(RuntimeError):
    """A tensor's values were read on the host while the step was recorded."""


@contextlib.contextmanager
def _host_reads(branches: list):
    """While recording: ``bool(t)`` (a Python ``if`` or ``while`` on a tensor) reads the value
    and appends ``(t, value)`` to ``branches``, so the recording can return ``t`` and each replay
    check that it went the same way; ``Tensor.tolist`` / ``numpy`` / ``__array__`` raise
    :class:`HostRead` (``make_fx`` refuses ``.item()`` itself, but lets these through silently)."""
    from torch.fx.experimental.proxy_tensor import disable_proxy_modes_tracing

    saved = {name: getattr(torch.Tensor, name) for name in ("tolist", "numpy", "__array__", "__bool__")}
    read_bool = saved["__bool__"]

    reading = []

    def branch(self):
        if reading:  # the read below comes back here through make_fx's __torch_function__ mode
            return read_bool(self)
        reading.append(self)
        try:
            with disable_proxy_modes_tracing():
                value = read_bool(self)
        finally:
            reading.pop()
        branches.append((self, value))
        return value

    def refuse(name):
        def method(self, *args, **kwargs):
            raise HostRead(f"Tensor.{name}() read a tensor's values on the host")
        return method

    for name in saved:
        setattr(torch.Tensor, name, branch if name == "__bool__" else refuse(name))
    try:
        yield
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)


@contextlib.contextmanager
def _lean_recording():
    """``make_fx`` without the metadata it keeps per node (a fake-tensor snapshot of every
    value and a stack trace), which only later compiler passes read: two thirds of the time a
    recording takes here (about 100 -> 35 ms for the bench's VAE step). Where torch's tracer
    is not laid out as expected, the recording is made as torch makes it."""
    import torch.fx.config as fx_config
    import torch.fx.experimental.proxy_tensor as proxy_tensor

    saved_meta = getattr(proxy_tensor, "set_meta", None)
    saved_stack = getattr(fx_config, "do_not_emit_stack_traces", None)

    def dtype_only(proxy, value):  # what _data_dependent_shapes reads: an index's dtype
        if isinstance(value, torch.Tensor):
            proxy.node.meta["dtype"] = value.dtype
        return proxy

    if saved_meta is not None:
        proxy_tensor.set_meta = dtype_only
    if saved_stack is not None:
        fx_config.do_not_emit_stack_traces = True
    try:
        yield
    finally:
        if saved_meta is not None:
            proxy_tensor.set_meta = saved_meta
        if saved_stack is not None:
            fx_config.do_not_emit_stack_traces = saved_stack


def _mutated_inputs(graph_module) -> list:
    """The recorded inputs and constants (placeholder and get_attr nodes) that an operation
    changes in place."""
    found = []
    for node in graph_module.graph.nodes:
        if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
            continue
        for argument, value in zip(node.target._schema.arguments, node.args):
            if (argument.alias_info is not None and argument.alias_info.is_write
                    and isinstance(value, torch.fx.Node) and value.op in ("placeholder", "get_attr")):
                found.append(value)
    return found


def _written(graph_module, node, input_names: list, module: torch.nn.Module) -> str:
    """What a user calls the tensor that ``node`` (from :func:`_mutated_inputs`) stands for:
    a batch key or parameter (``input_names``, in placeholder order), a buffer of ``module``,
    or else its shape (a module's tensor reached otherwise, e.g. through ``pyro.module``)."""
    if node.op == "placeholder":
        placeholders = [n for n in graph_module.graph.nodes if n.op == "placeholder"]
        return input_names[placeholders.index(node)]
    value = getattr(graph_module, str(node.target), None)
    names = {}
    for member in getattr(module, "pair", [module] if module is not None else []):  # a LossModule's model, guide
        names.update({id(buffer): f"{type(member).__name__}.{name}" for name, buffer in member.named_buffers()})
    if id(value) in names:
        return f"the buffer {names[id(value)]!r}"
    shape = tuple(value.shape) if isinstance(value, torch.Tensor) else ()
    return f"a tensor of shape {shape} held outside its inputs (a module's buffer)"


def _prune(graph_module) -> int:
    """Remove the recorded operations whose results nothing reads (a plate's index range, the
    detached copies Pyro's bookkeeping makes, constants copied and dropped), which the eager step
    computes for nothing: pure aten operations and unread constants only. A random draw stays
    even if unread (it moves the random stream, as the eager step does), and so does an
    in-place write or any other kind of call. Returns how many were removed."""
    def kept(node) -> bool:
        if node.op == "get_attr":
            return False
        target = node.target
        if node.op != "call_function" or not isinstance(target, torch._ops.OpOverload):
            return True
        return target._schema.is_mutable or torch.Tag.nondeterministic_seeded in target.tags or node.is_impure()

    before = len(graph_module.graph.nodes)
    if graph_module.graph.eliminate_dead_code(is_impure_node=kept):
        graph_module.recompile()
    return before - len(graph_module.graph.nodes)


def _dtype(node) -> Optional[torch.dtype]:
    if not isinstance(node, torch.fx.Node):
        return None
    value = node.meta.get("val")
    return node.meta.get("dtype", getattr(value, "dtype", None))


def _data_dependent_shapes(graph_module) -> list:
    """The recorded operations whose output's size depends on their inputs' values (torch's
    ``dynamic_output_shape`` tag: ``nonzero``, ``masked_select``, ``unique``, ...; an ``index``
    only with a boolean mask, an integer index having the index's shape), by name."""
    found = []
    for node in graph_module.graph.nodes:
        target = node.target
        if node.op != "call_function" or not isinstance(target, torch._ops.OpOverload):
            continue
        if torch.Tag.dynamic_output_shape not in target.tags:
            continue
        name = str(target.overloadpacket).replace("aten.", "")
        if name == "index":
            indices = node.args[1] if len(node.args) > 1 else ()
            if not any(_dtype(i) in (torch.bool, torch.uint8) for i in indices):
                continue
            name = "a boolean-mask index"
        if name not in found:
            found.append(name)
    return found


def _close(a: Optional[torch.Tensor], b: Optional[torch.Tensor]) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if a.shape != b.shape:
        return False
    # a diverged step (nan or inf, e.g. a learning rate far too large) is compared as it is:
    # the same non-finite entries on both sides, the finite ones to float rounding; fit's own
    # check then names the step whose loss is not finite
    finite = torch.nan_to_num(a.detach(), nan=0.0, posinf=0.0, neginf=0.0)
    scale = float(finite.abs().max()) if a.numel() else 0.0
    return bool(torch.allclose(a, b, rtol=1e-4, atol=1e-6 + 1e-5 * scale, equal_nan=True))


#: a replay that branches another way than its recording this often (and at least in a quarter of
#: the replays) has its recording made again, at most MAX_RECORDINGS times in a run
MISSES_TO_RERECORD = 4
MAX_RECORDINGS = 3
_OTHER_BRANCH = "the check's batch went another way"


class ReplayedStep:
    """Replay the recorded forward pass of a training step for every full-size batch.

    :param train_step: the :class:`~pyrovae.training.step.TrainStep` (its ``module``,
        ``optimizer`` and ``quiet`` context); its ``__call__`` is the eager step.
    :param callable eager: ``eager(batch, step) -> detached loss`` (default ``train_step``).
    :param bool enabled: record at all (False: every call is eager).
    :param int warmup: eager steps before the recording (at least 1: lazy initializations,
        and the batch that checks the recording).
    :param int static_from: the first step index from which the step does not depend on it.
    :param weight: the objective whose KL weight changes with the step (a warm-up), or None:
        the recording takes the weight as an input (the objective's ``weight_as_input``) and
        each replay passes its step's ``kl_weight(step)``, so the warm-up's steps replay too
        (``static_from`` is then 0).
    :param callable on_fallback: called with a message when the replay is switched off.
    """

    def __init__(self, train_step, eager: Optional[Callable] = None, *, enabled: bool = True, warmup: int = 3,
                 static_from: int = 0, weight=None, on_fallback: Optional[Callable[[str], None]] = None):
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1 (the recording is checked on an earlier batch), got {warmup}")
        self.train_step = train_step
        self.eager = eager if eager is not None else train_step
        self.weight = weight
        self.enabled, self.warmup, self.static_from = enabled, warmup, 0 if weight is not None else static_from
        self.on_fallback = on_fallback or (lambda message: warnings.warn(message, RuntimeWarning, stacklevel=3))
        self.graph = None
        self.data_dependent: list = []  # the recording's operations with a data-dependent output size
        self.branches: tuple = ()  # the values bool(t) gave while recording, each replay's to match
        self.missed = 0  # replays of this recording that went another way (run eagerly instead)
        self.recordings = 0
        self.keys: tuple = ()
        self.params: list = []
        self.signature = None
        self.previous: Optional[Dict[str, torch.Tensor]] = None
        self.previous_step = 0  # the step the previous batch was trained at (the check's KL weight)
        self.warmed = 0
        self.replays = 0
        self.eager_steps = 0

    def __call__(self, batch: Dict[str, torch.Tensor], step: int) -> torch.Tensor:
        if not static_step(self, batch, step):
            return self._eager(batch, step)
        if self.graph is None:
            if self.warmed < self.warmup:
                self.warmed += 1
                self._keep(batch, step)
                return self._eager(batch, step)
            return self._record(batch, step)
        if self.data_dependent or self.branches:
            return self._guarded_replay(batch, step)
        self.replays += 1
        loss, _ = self._run(self.graph, batch, step)
        return self._update(loss)

    def _keep(self, batch, step):
        """``batch``, trained at ``step``, is the one the next recording is checked on."""
        self.previous, self.previous_step = batch, step

    def _weight_input(self, step) -> list:
        """The recording's KL-weight input at ``step`` ([] without a warm-up to replay)."""
        if self.weight is None:
            return []
        return [torch.tensor(float(self.weight.kl_weight(step)))]  # the default dtype, as the losses

    def _run(self, graph, batch, step):
        """The recording on ``batch`` at ``step``: its loss, and whether each ``bool(t)`` went as
        recorded."""
        loss, *branches = graph.forward(*[batch[key] for key in self.keys], *self.params,
                                        *self._weight_input(step))  # not nn.Module's call
        return loss, all(bool(read) == value for read, value in zip(branches, self.branches))

    def _guarded_replay(self, batch, step):
        """A replay of a recording with data-dependent sizes or branches: where it raises (a size
        kept from the recorded batch meets another), the draws it took are given back and the
        step runs eagerly, as every later one; where a branch goes another way than recorded
        (e.g. a rejection sampler's rare extra round), the draws are given back and this step
        runs eagerly (the same draws, so the same numbers as eager)."""
        state = torch.get_rng_state()
        optimizer = self.train_step.optimizer
        try:
            loss, same_way = self._run(self.graph, batch, step)
            if not same_way:
                torch.set_rng_state(state)
                return self._missed(batch, step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        except Exception as error:  # noqa: BLE001 - the eager step raises what is a real error
            optimizer.zero_grad(set_to_none=True)
            torch.set_rng_state(state)
            if self.data_dependent and self.recordings < MAX_RECORDINGS:  # recorded again, checked on this batch
                self.graph = None
                self._keep(batch, step)
                return self._eager(batch, step)
            detail = f"a replay failed, {type(error).__name__}: {' '.join(str(error).split())}"
            self._switch_off(self._sized_selection(detail))
            return self._eager(batch, step)
        self.replays += 1
        optimizer.step()
        return loss.detach()

    def _missed(self, batch, step):
        """This step eagerly, its replay having branched another way. Where that is common (the
        recording took a rare branch), the recording is made again on the next step, twice at
        most; then the replay is switched off."""
        self.missed += 1
        if self.missed >= MISSES_TO_RERECORD and 4 * self.missed > self.replays:
            if self.recordings >= MAX_RECORDINGS:
                self._switch_off(f"the training step branches on tensor values in Python (an if or while on a "
                                 f"tensor) and went another way than recorded in {self.missed} of "
                                 f"{self.missed + self.replays} steps, over {self.recordings} recordings; it runs "
                                 "eagerly")
            else:
                self.graph = None  # recorded again on the next step
                self._keep(batch, step)
        return self._eager(batch, step)

    def _eager(self, batch, step):
        self.eager_steps += 1
        return self.eager(batch, step)

    def _update(self, loss: torch.Tensor) -> torch.Tensor:
        optimizer = self.train_step.optimizer
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    def _forward(self, batch, step):
        """The eager forward pass of the step: the loss."""
        ts = self.train_step
        with ts.quiet, ts.autocast:
            return ts.module(batch, step)

    def _record(self, batch, step) -> torch.Tensor:
        """This step, run eagerly while its forward pass is recorded; then the recording is
        checked. The update uses the recording run's own loss."""
        from torch.fx.experimental.proxy_tensor import make_fx

        self.keys = tuple(batch)
        self.params = [p for group in self.train_step.optimizer.param_groups for p in group["params"]]
        ran, branches = {}, []
        weighting = self.weight.weight_as_input if self.weight is not None else lambda weight: contextlib.nullcontext()

        def forward(*inputs):
            with weighting(inputs[-1]):  # the last input is the KL weight where it varies (else unused)
                ran["loss"] = self._forward(dict(zip(self.keys, inputs)), step)
            return (ran["loss"], *[read for read, _ in branches])

        inputs = [batch[key] for key in self.keys] + self.params + self._weight_input(step)
        state = torch.get_rng_state()
        self.recordings += 1
        try:
            with _host_reads(branches), _lean_recording():
                graph = make_fx(forward, tracing_mode="real")(*inputs)
        except Exception as error:  # noqa: BLE001 - any failure means: eager from now on
            self._switch_off(self._describe(error))
            torch.set_rng_state(state)  # the draws of the unfinished run, taken back
            return self._eager(batch, step)
        loss = ran["loss"]
        self.branches, self.missed, self.replays = tuple(value for _, value in branches), 0, 0
        mutated = _mutated_inputs(graph)
        if mutated:
            names = [f"the batch's {key!r}" for key in self.keys] + [
                f"a parameter of shape {tuple(p.shape)}" for p in self.params]
            written = _written(graph, mutated[0], names, getattr(self.train_step, "module", None))
            message = (f"the training step cannot be replayed: the step changes {written} in place (e.g. batch "
                       "norm's running statistics in train mode); training continues eagerly")
        else:
            _prune(graph)  # the operations nothing reads; the check then checks the graph that will run
            self.data_dependent = _data_dependent_shapes(graph)
            message = self._check(graph, step)
        if message is _OTHER_BRANCH:  # the check's batch went another way: recorded again on the next
            self._keep(batch, step)
            if self.recordings >= MAX_RECORDINGS:
                self._switch_off(f"the training step branches on tensor values in Python (an if or while on a "
                                 f"tensor) and {self.recordings} recordings went another way on their checks' "
                                 "batches; it runs eagerly")
        elif message is not None and self.data_dependent and self.recordings < MAX_RECORDINGS:
            self._keep(batch, step)  # a selection's size kept from this batch: recorded again on the next
        elif message is not None:
            self._switch_off(message)
        else:
            self.graph, self.previous = graph, None
        return self._update(loss)

    def _check(self, graph, step) -> Optional[str]:
        """The replayed loss and gradients against the eager ones on the previous batch at the
        same random state; None where they agree, else the warning that says what differs.
        Where the KL weight is an input, both are at the previous batch's own step, whose weight
        differs from the recording's during a warm-up: a weight frozen into the recording fails."""
        batch, params = self.previous, self.params
        step = self.previous_step if self.weight is not None else step
        try:
            with preserved_rng():
                eager = self._forward(batch, step)
                eager_grads = torch.autograd.grad(eager, params, allow_unused=True)
            with preserved_rng():
                replayed, same_way = self._run(graph, batch, step)
                if not same_way:
                    return _OTHER_BRANCH
                replayed_grads = torch.autograd.grad(replayed, params, allow_unused=True)
        except Exception as error:  # noqa: BLE001
            detail = f"{type(error).__name__}: {' '.join(str(error).split())}"
            if self.data_dependent:
                return self._sized_selection(f"its check on another batch failed, {detail}")
            return f"the training step cannot be replayed: its check failed ({detail[:200]}); training continues eagerly"
        if not _close(eager.detach(), replayed.detach()):
            detail = f"{float(replayed.detach()):.6g}, eager {float(eager.detach()):.6g}"
            if self.data_dependent:
                return self._sized_selection(f"the recording gives another loss on another batch, {detail}")
            return (f"the training step cannot be replayed: the recorded step gives another loss on other data "
                    f"({detail}): it reads values on the host; training continues eagerly")
        if not all(_close(a, b) for a, b in zip(eager_grads, replayed_grads)):
            return ("the training step cannot be replayed: the recorded step gives other gradients (a torch.no_grad "
                    "block, a tensor hook or a custom autograd function in the step, or values read on the host); "
                    "training continues eagerly")
        return None

    def _sized_selection(self, detail: str) -> str:
        """The warning for a recording with data-dependent sizes that does not hold on another batch."""
        return (f"the training step indexes with a data-dependent mask ({', '.join(self.data_dependent)}) and the "
                f"recording keeps one batch's size of the selection (read in Python: .shape, len) ({detail[:160]}); "
                "it cannot be replayed and runs eagerly")

    @staticmethod
    def _describe(error: Exception) -> str:
        text = " ".join(str(error).split())
        if isinstance(error, HostRead) or "_local_scalar_dense" in text or "data-dependent" in text:
            return ("the training step reads tensor values on the host (.item(), .tolist(), .numpy()); it cannot "
                    "be replayed and runs eagerly")
        return (f"recording the training step for replay failed ({type(error).__name__}: {text[:200]}); "
                "training continues eagerly")

    def _switch_off(self, message: str):
        self.enabled = False
        self.graph = None
        self.previous = None
        self.on_fallback(message)


def replayable(device, distributed: bool, compiled: bool, precision: str, objective) -> bool:
    """Whether fit replays the CPU step (:class:`ReplayedStep`): on a CPU, in one process,
    without ``compile=True``, in fp32, for the suite's own objectives: those the CUDA graph
    captures (:func:`~pyrovae.training.cuda_graph.graph_safe`) and the enumerated ELBO
    (:class:`~pyrovae.infer.enum.EnumELBO`, M2's), whose recording the replay's own check
    against the eager step guards (a CUDA graph has no such check, so the graph's rule leaves
    it out). ``gradient="dreg"`` is refused: it scales the guide's gradients with a custom autograd
    function, which a recording below autograd does not keep (the check would fail, with a warning)."""
    from pyrovae.infer.enum import EnumELBO
    from pyrovae.training.cuda_graph import graph_safe

    return (torch.device(device).type == "cpu" and not distributed and not compiled and precision == "fp32"
            and getattr(objective, "gradient", "plain") != "dreg"  # a custom autograd function: not recorded
            and (graph_safe(objective) or type(objective) is EnumELBO))


def replays_step(model, guide) -> bool:
    """Whether the pair may be recorded for the replay: neither declares ``replays_step = False``
    (a suite pair whose step reads values on the host by design, e.g. the sentence encoders;
    such a pair runs eagerly without the fallback warning a user's program gets)."""
    return all(getattr(part, "replays_step", True) for part in (model, guide))


def varying_weight(objective):
    """``objective`` where its KL weight warms up and the replay may take it as an input
    (:meth:`~pyrovae.infer.objectives.Objective.weight_as_input`), else None: the warm-up's
    steps then run eagerly and the replay starts after them."""
    if getattr(objective, "warmup_steps", 0) > 0 and getattr(objective, "weight_as_input", False):
        return objective
    return None
