"""How much time does the L-SR1 step itself cost, next to Adam, torch's L-BFGS and a GEMV?

    python benchmarks/step_overhead.py                      # CPU, n in 1e5..1e7, m in 2, 5, 10
    python benchmarks/step_overhead.py --device cuda --n 1e6 1e7 --m 5 10

For each (n, m) it prints median times over ``--repeats`` steps, with the memory full
(k = m) and pairs that pass the skip test:

- ``lsr1``: one LSR1.step (trust region) minus the time spent inside its two closure
  calls (timed around each call), i.e. the optimizer's own work; the closure evaluates a cheap non-quadratic function so
  steps are accepted, rejected and stored as in training.
- ``adam``: one torch.optim.Adam step (gradients already in place).
- ``lbfgs``: one torch.optim.LBFGS iteration (max_iter=1, history_size=m, no line
  search) minus the time inside its closure call.
- ``gemv``: one product of a (2m x n) matrix with a vector (the size of S and Y together,
  what torch's L-BFGS holds): the unit of ``lsr1/gemv``.
- ``syncs``: blocking device-to-host transfers per L-SR1 step (``statistics()["host_syncs"]``).
- ``state n``: elements of the optimizer's state tensors (``opt.state``) per parameter;
  ``bytes n``: ``memory_bytes()`` (state and work buffers) per parameter byte, checked
  against the docstring's footprint ``param_bytes * (m + 6)`` (``ok``).

Goals: lsr1 / gemv <= 5 at m = 5, n = 4e6 on CPU; two host syncs per step; on an
H200-class GPU at n = 1e7, m = 5, lsr1 <= 1.0 ms. Since S is no longer stored: at n = 4e6
on CPU, lsr1 / lbfgs <= 1 at m = 5 and 10, lsr1 / gemv <= 2.5 at m = 5, state <= (m + 1) n.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lsr1bench.optim import LSR1


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# The clock: wall time (default), or this process's CPU time (``--clock cpu``: on a shared,
# loaded machine it leaves out the time other processes hold the cores; with several threads
# it adds theirs up, so compare its figures with each other only).
CLOCK = time.perf_counter


def timed(fn, device: torch.device, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        sync(device)
        start = CLOCK()
        fn()
        sync(device)
        times.append(CLOCK() - start)
    return statistics.median(times)


def problem(n: int, device: torch.device, dtype: torch.dtype):
    gen = torch.Generator(device="cpu").manual_seed(0)
    d = (torch.rand(n, generator=gen, dtype=dtype) * 2.0 + 0.1).to(device)
    x = (torch.randn(n, generator=gen, dtype=dtype) * 0.5).to(device).requires_grad_(True)

    def closure_for(opt):
        def closure():
            # f = 1/2 sum d x^2 + 1/4 sum x^4, gradient by hand (no autograd graph cost)
            with torch.no_grad():
                x2 = x * x
                loss = (0.5 * d * x2 + 0.25 * x2 * x2).sum()
                x.grad = d * x + x2 * x
            return loss
        return closure

    return x, closure_for


class TimedClosure:
    """Wraps a closure and accumulates the wall-clock spent inside it (synchronised)."""

    def __init__(self, closure, device):
        self.closure, self.device, self.seconds = closure, device, 0.0

    def __call__(self):
        sync(self.device)
        start = CLOCK()
        loss = self.closure()
        sync(self.device)
        self.seconds += CLOCK() - start
        return loss


def own_time(opt, closure, device, repeats):
    """Median over steps of (step time - time spent in the closure during that step)."""
    timed_closure = TimedClosure(closure, device)
    times = []
    for _ in range(repeats):
        timed_closure.seconds = 0.0
        sync(device)
        start = CLOCK()
        opt.step(timed_closure)
        sync(device)
        times.append(CLOCK() - start - timed_closure.seconds)
    return statistics.median(times)


def bench_lsr1(n, m, device, dtype, repeats):
    x, closure_for = problem(n, device, dtype)
    opt = LSR1([x], memory=m)
    closure = closure_for(opt)
    for _ in range(3 * m):  # fill the memory
        opt.step(closure)
    before = opt.statistics()
    seconds = own_time(opt, closure, device, repeats)
    stats = opt.statistics()
    stats["syncs_per_step"] = (stats["host_syncs"] - before["host_syncs"]) / (stats["steps"] - before["steps"])
    state_elements = sum(t.numel() for value in opt.state.values() for t in value.values() if torch.is_tensor(t))
    stats["state_per_n"] = state_elements / n
    param_bytes = n * x.element_size()
    stats["bytes_per_param_byte"] = opt.memory_bytes() / param_bytes
    # the docstring's footprint, param_bytes * (m + 6) with the padding to 4,096 values, plus
    # the k x k float64 matrices (Psi^T Psi, S^T Psi, ||s_i||^2)
    small = 8 * (2 * m * m + m)
    stats["footprint_ok"] = opt.memory_bytes() <= (m + 6) * (-(-n // 4096) * 4096) * x.element_size() + small
    return seconds, stats


def bench_adam(n, device, dtype, repeats):
    x = torch.zeros(n, device=device, dtype=dtype, requires_grad=True)
    x.grad = torch.randn(n, device=device, dtype=dtype)
    opt = torch.optim.Adam([x])
    opt.step()
    return timed(opt.step, device, repeats)


def bench_lbfgs(n, m, device, dtype, repeats):
    x, closure_for = problem(n, device, dtype)
    opt = torch.optim.LBFGS([x], lr=0.1, max_iter=1, history_size=m)
    closure = closure_for(opt)
    for _ in range(2 * m):
        opt.step(closure)
    return own_time(opt, closure, device, repeats)


def bench_gemv(n, m, device, dtype, repeats):
    memory = torch.randn(2 * m, n, device=device, dtype=dtype)
    v = torch.randn(n, device=device, dtype=dtype)
    return timed(lambda: torch.mv(memory, v), device, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", nargs="+", type=float, default=[1e5, 1e6, 4e6, 1e7])
    parser.add_argument("--m", nargs="+", type=int, default=[2, 5, 10])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall time, or this process's CPU time (for a shared, loaded machine)")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# step overhead on {name}, {args.dtype}, torch {torch.__version__}, median of {args.repeats}, "
          f"{args.clock} clock")
    header = (f"{'n':>10} {'m':>3} {'lsr1 ms':>9} {'adam ms':>9} {'lbfgs ms':>9} {'gemv ms':>9} "
              f"{'lsr1/gemv':>9} {'lsr1/adam':>9} {'lsr1/lbfgs':>10} {'syncs':>5} {'skipped':>7} {'rejected':>8} "
              f"{'state n':>7} {'bytes n':>7} {'ok':>3}")
    print(header)
    by_m: dict[tuple[int, int], float] = {}
    for n_float in args.n:
        n = int(n_float)
        adam = bench_adam(n, device, dtype, args.repeats)
        for m in args.m:
            lsr1, stats = bench_lsr1(n, m, device, dtype, args.repeats)
            lbfgs = bench_lbfgs(n, m, device, dtype, args.repeats)
            gemv = bench_gemv(n, m, device, dtype, args.repeats)
            by_m[(n, m)] = lsr1
            print(f"{n:>10d} {m:>3d} {lsr1 * 1e3:9.2f} {adam * 1e3:9.2f} {lbfgs * 1e3:9.2f} {gemv * 1e3:9.2f} "
                  f"{lsr1 / gemv:9.2f} {lsr1 / adam:9.2f} {lsr1 / lbfgs:10.2f} {stats['syncs_per_step']:5.2f} "
                  f"{stats['skipped_updates']:7d} {stats['rejected_steps']:8d} {stats['state_per_n']:7.2f} "
                  f"{stats['bytes_per_param_byte']:7.2f} {'yes' if stats['footprint_ok'] else 'NO':>3}")
    for n_float in args.n:
        n = int(n_float)
        if (n, 5) in by_m and (n, 10) in by_m:
            print(f"n={n}: t(m=10)/t(m=5) = {by_m[(n, 10)] / by_m[(n, 5)]:.2f}")


if __name__ == "__main__":
    main()
