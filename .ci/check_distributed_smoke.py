"""The data-parallel bar for suites/distributed_smoke.yaml: each 2-rank run retraces its 1-rank run.

    python .ci/check_distributed_smoke.py outputs/distributed_smoke

Every run must be completed; for each run id with -p2 and its 1-rank twin: final test
error within 0.5 points, and for L-SR1 accepted and rejected steps within 1. Exit 1 and
one line per miss otherwise.
"""

from __future__ import annotations

import sys

from lsr1bench import records


def main(folder: str) -> int:
    runs = {record.run_id: (path, record) for path, record in records.iter_runs(folder)}
    problems = [f"{run_id}: {record.status} ({record.error})" for run_id, (_, record) in runs.items()
                if record.status != records.COMPLETED]  # fmt: skip
    pairs = [(run_id.replace("-p2-", "-"), run_id) for run_id in runs if "-p2-" in run_id]
    if not pairs:
        problems.append(f"{folder}: no 2-rank runs")
    for one_id, two_id in pairs:
        if one_id not in runs:
            problems.append(f"{two_id}: no 1-rank run {one_id} to compare with")
            continue
        if runs[one_id][1].status != records.COMPLETED or runs[two_id][1].status != records.COMPLETED:
            continue  # reported above
        one = records.read_epochs(runs[one_id][0])[-1]
        two = records.read_epochs(runs[two_id][0])[-1]
        checks = [("test_error", 0.5)]
        if runs[two_id][1].spec["optimizer"].startswith("lsr1"):
            checks += [("accepted_steps", 1), ("rejected_steps", 1)]
        for column, tolerance in checks:
            if one[column] is None or two[column] is None or abs(one[column] - two[column]) > tolerance:
                problems.append(f"{two_id}: {column} {two[column]} vs {one[column]} on 1 rank (allowed: +-{tolerance})")
        print(f"{two_id}: " + ", ".join(f"{c} {two[c]} (1 rank: {one[c]})" for c, _ in checks))
    for line in problems:
        print(f"FAIL {line}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "outputs/distributed_smoke"))
