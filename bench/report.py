"""Results of a run: what was measured, the table printed for people, the JSON for tools."""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

REGISTRIES = {"hroot": "hroot", "distribution": "Distribution"}  # key: column title


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def number(value: float) -> str:
    """Three significant figures without exponents."""
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}" if value >= 0.001 else f"{value:.2e}"


@dataclass
class Outcome:
    """One registry's side of one workload."""

    samples: dict[str, list[float]] = field(default_factory=dict)
    peak_rss: int = 0
    disk_bytes: int = 0
    error: str | None = None

    def add(self, metrics: Mapping[str, float]) -> None:
        for name, value in metrics.items():
            self.samples.setdefault(name, []).append(value)

    def medians(self) -> dict[str, float]:
        return {name: statistics.median(values) for name, values in self.samples.items()}


@dataclass
class WorkloadResult:
    number: int
    title: str
    rounds: int
    params: dict[str, object]
    outcomes: dict[str, Outcome]  # keyed like REGISTRIES

    def metrics(self) -> list[str]:
        """Metric names in the order they were first measured on either registry."""
        names: dict[str, None] = {}
        for outcome in self.outcomes.values():
            names.update(dict.fromkeys(outcome.samples))
        return list(names)

    def ratios(self) -> dict[str, float]:
        hroot = self.outcomes["hroot"].medians()
        distribution = self.outcomes["distribution"].medians()
        return {
            name: hroot[name] / distribution[name]
            for name in self.metrics()
            if name in hroot and distribution.get(name)
        }


def format_table(
    header: list[str],
    rows: list[list[str]],
    titles: Mapping[int, str] | None = None,
    align: str = "ll",
) -> list[str]:
    """Lines of a table; column i is left-aligned if align[i] is "l", right-aligned if it is
    "r" or missing. A row may be shorter than the header; `titles` maps a row index to a
    line printed above that row, across the columns.
    """
    widths = [
        max(len(row[i]) for row in [header, *rows] if i < len(row)) for i in range(len(header))
    ]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(width) if align[i : i + 1] == "l" else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=False))
        ).rstrip()

    out = [line(header)]
    for index, row in enumerate(rows):
        if titles and index in titles:
            out.append(titles[index])
        out.append(line(row))
    return out


def table(results: list[WorkloadResult], heading: str) -> str:
    header = [
        "#",
        "metric",
        *REGISTRIES.values(),
        "ratio",
        *(f"peak RSS {name}" for name in REGISTRIES.values()),
        *(f"disk {name}" for name in REGISTRIES.values()),
    ]
    rows: list[list[str]] = []
    titles: dict[int, str] = {}  # row index → workload title line
    errors: list[str] = []
    for result in results:
        titles[len(rows)] = f"{result.number}  {result.title} ({result.rounds} rounds)"
        medians = {key: outcome.medians() for key, outcome in result.outcomes.items()}
        ratios = result.ratios()
        for index, metric in enumerate(result.metrics() or ["(no measurement)"]):
            row = ["", metric]
            row += [
                number(medians[key][metric])
                if metric in medians[key]
                else "error"
                if result.outcomes[key].error
                else "-"
                for key in REGISTRIES
            ]
            row.append(f"{ratios[metric]:.2f}" if metric in ratios else "-")
            if index == 0:
                row += [human_bytes(result.outcomes[key].peak_rss) for key in REGISTRIES]
                row += [human_bytes(result.outcomes[key].disk_bytes) for key in REGISTRIES]
            rows.append(row)
        errors += [
            f"{result.number} {REGISTRIES[key]}: {outcome.error}"
            for key, outcome in result.outcomes.items()
            if outcome.error
        ]
    out = [heading, "", *format_table(header, rows, titles)]
    if errors:
        out += ["", "Errors:", *errors]
    return "\n".join(out)


def to_json(results: list[WorkloadResult], meta: dict[str, object]) -> dict[str, object]:
    return {
        "meta": meta,
        "workloads": [
            {
                "number": result.number,
                "title": result.title,
                "rounds": result.rounds,
                "params": result.params,
                "ratios": result.ratios(),
                "registries": {
                    key: {
                        "medians": outcome.medians(),
                        "samples": outcome.samples,
                        "peak_rss_bytes": outcome.peak_rss,
                        "disk_bytes": outcome.disk_bytes,
                        "error": outcome.error,
                    }
                    for key, outcome in result.outcomes.items()
                },
            }
            for result in results
        ],
    }


def write_json(path: Path, document: Mapping[str, object]) -> None:
    path.write_text(json.dumps(document, indent=2) + "\n")
