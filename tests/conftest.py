"""Suite-wide: after a run, the float32 kernel comparisons' margins (tests/numerics.py), so that a developer
sees how close each came to its bound on this machine's kernels."""

from __future__ import annotations


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    from numerics import MEASURED

    if not MEASURED:
        return
    worst: dict[str, tuple[str, float, float]] = {}
    for test, what, err, bound in MEASURED:
        if test not in worst or err / bound > worst[test][1] / worst[test][2]:
            worst[test] = (what, err, bound)
    terminalreporter.section("float32 kernel comparisons: the worst of each test, against its bound")
    for test, (what, err, bound) in sorted(worst.items()):
        terminalreporter.write_line(f"{err:.1e} of {bound:.1e} ({100 * err / bound:.2f}%)  {test} [{what}]")
