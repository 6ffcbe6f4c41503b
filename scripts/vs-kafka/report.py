"""The report of scripts/bench-vs-kafka: medians and ranges of its results.jsonl as Markdown
tables (report.md) and a chart (chart.png), Apache Kafka beside Tributary.

    python3 report.py RESULTS.jsonl OUT_DIR KAFKA_NAME MACHINE
"""

import json
import statistics
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SYSTEMS = ("kafka", "tributary")
LABELS = {
    "produce-1p-rf1-acks1": "produce, 1 partition, RF 1, acks=1",
    "produce-3p-rf3-acksall": "produce, 3 partitions, RF 3, acks=all",
    "consume-3p-rf3": "consume 3 partitions from the start",
    "latency-3p-rf3-acksall": "acks=all at half of Kafka's rate",
    "produce-1000p-rf3-acksall": "produce, 1,000 partitions, RF 3, acks=all",
    "fill-1000p-rf1-acks1": "produce, 1,000 partitions, 1 broker, acks=1",
    "create-1000p-rf3": "new topic of 1,000 partitions usable",
    "restart-1000p-clean": "broker restart, 1,000 partitions, clean stop",
    "restart-1000p-kill9": "broker restart, 1,000 partitions, kill -9",
}
CLIENTS = {"java": "Kafka's Java tools", "franz": "franz-go"}


def load(path):
    figures = defaultdict(list)  # (workload, client, system, metric) -> values
    order = []
    for line in open(path):
        row = json.loads(line)
        key = (row["workload"], row["client"])
        if key not in order:
            order.append(key)
        for metric, value in row.items():
            if isinstance(value, (int, float)) and metric != "round":
                figures[key + (row["system"], metric)].append(value)
    return figures, order


def summary(values, digits):
    if not values:
        return "–"
    fmt = f"{{:,.{digits}f}}"
    median = fmt.format(statistics.median(values))
    if len(values) == 1:
        return median
    return f"{median} ({fmt.format(min(values))} to {fmt.format(max(values))})"


def ratio(figures, key, metric):
    kafka, tributary = (figures.get(key + (s, metric)) for s in SYSTEMS)
    if not kafka or not tributary or statistics.median(kafka) == 0:
        return None
    return statistics.median(tributary) / statistics.median(kafka)


def show_ratio(value):
    return "–" if value is None else f"{value:.2f}×"


def latencies(figures, key):
    if not figures.get(key + ("p99_ms",)):
        return "–"
    return " / ".join(
        f"{statistics.median(figures[key + (m,)]):,.1f}" for m in ("p50_ms", "p99_ms", "p999_ms", "max_ms")
    )


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def report(figures, order, kafka_name, machine):
    rounds = max((len(v) for v in figures.values()), default=0)
    runs = f"medians of {rounds} runs with their ranges" if rounds > 1 else "one run each"
    out = [
        f"{kafka_name} and Tributary on one {machine} machine, one after the other, with the same"
        f" clients and load; 1 KiB records; {runs}; the ratio is Tributary's median over Kafka's.",
        "",
    ]
    name = lambda key: f"{LABELS.get(key[0], key[0])}, {CLIENTS.get(key[1], key[1])}"  # noqa: E731
    moved = [k for k in order if (k + ("kafka", "mb_per_s")) in figures]
    out += [
        table(
            ["workload", "Kafka MB/s", "Tributary MB/s", "ratio", "Kafka records/s", "Tributary records/s"],
            [
                [name(k)]
                + [summary(figures.get(k + (s, "mb_per_s"), []), 1) for s in SYSTEMS]
                + [show_ratio(ratio(figures, k, "mb_per_s"))]
                + [summary(figures.get(k + (s, "records_per_s"), []), 0) for s in SYSTEMS]
                for k in moved
            ],
        ),
        "",
    ]
    produced = [k for k in moved if (k + ("kafka", "p99_ms")) in figures]
    out += [
        "Latency from send to acknowledgement, in ms, as each producer measures it:",
        "",
        table(
            ["workload", "Kafka p50 / p99 / p99.9 / max", "Tributary p50 / p99 / p99.9 / max", "p99 ratio"],
            [
                [name(k)]
                + [latencies(figures, k + (s,)) for s in SYSTEMS]
                + [show_ratio(ratio(figures, k, "p99_ms"))]
                for k in produced
            ],
        ),
        "",
        "The servers' resources during each run: peak resident memory summed over every server"
        " process (Kafka: its nodes; Tributary: its brokers and controller) and their CPU"
        " seconds per GB of records:",
        "",
        table(
            ["workload", "Kafka RSS MiB", "Tributary RSS MiB", "ratio", "Kafka CPU s/GB", "Tributary CPU s/GB", "ratio"],
            [
                [name(k)]
                + [summary(figures.get(k + (s, "rss_mib"), []), 0) for s in SYSTEMS]
                + [show_ratio(ratio(figures, k, "rss_mib"))]
                + [summary(figures.get(k + (s, "cpu_s_per_gb"), []), 2) for s in SYSTEMS]
                + [show_ratio(ratio(figures, k, "cpu_s_per_gb"))]
                for k in moved
            ],
        ),
        "",
    ]
    timed = [k for k in order if (k + ("kafka", "ms")) in figures]
    if timed:
        out += [
            table(
                ["time until ready", "Kafka ms", "Tributary ms", "ratio"],
                [
                    [LABELS.get(k[0], k[0])]
                    + [summary(figures.get(k + (s, "ms"), []), 0) for s in SYSTEMS]
                    + [show_ratio(ratio(figures, k, "ms"))]
                    for k in timed
                ],
            ),
            "",
        ]
    return "\n".join(out), moved, produced, timed


def chart(figures, moved, produced, timed, path):
    panels = [
        ("throughput, MB/s (higher is better)", moved, "mb_per_s"),
        ("p99 latency, ms (lower is better)", produced, "p99_ms"),
        ("peak RSS of all servers, MiB (lower is better)", moved, "rss_mib"),
        ("time until ready, ms (lower is better)", timed, "ms"),
    ]
    panels = [p for p in panels if p[1]]
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 3.2 * len(panels) + 1))
    for ax, (title, keys, metric) in zip(axes, panels):
        labels = [f"{LABELS.get(w, w)}\n{CLIENTS.get(c, c) if metric != 'ms' else ''}".strip() for w, c in keys]
        width = 0.38
        for i, (system, colour) in enumerate(zip(SYSTEMS, ("#7f7f7f", "#1f77b4"))):
            values = [figures.get(k + (system, metric), [0]) for k in keys]
            medians = [statistics.median(v) for v in values]
            errors = [[m - min(v) for m, v in zip(medians, values)], [max(v) - m for m, v in zip(medians, values)]]
            ax.barh([y + (i - 0.5) * width for y in range(len(keys))], medians, width, xerr=errors,
                    color=colour, label="Apache Kafka" if system == "kafka" else "Tributary", capsize=2)
        ax.set_yticks(range(len(keys)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=9, loc="left")
        if metric == "p99_ms":
            ax.set_xscale("log")
        ax.tick_params(axis="x", labelsize=7)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    results, out_dir, kafka_name, machine = sys.argv[1:5]
    figures, order = load(results)
    text, moved, produced, timed = report(figures, order, kafka_name, machine)
    with open(f"{out_dir}/report.md", "w") as f:
        f.write(text)
    chart(figures, moved, produced, timed, f"{out_dir}/chart.png")


if __name__ == "__main__":
    main()
