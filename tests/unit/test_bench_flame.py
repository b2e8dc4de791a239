"""The bench's flame graph: its sample count read from py-spy's SVG, and the report's line that sets
those samples (taken only while the process held the GIL) against the CPU the process used."""

from __future__ import annotations

from pathlib import Path

from bench.run import flame_lines, flame_samples

SVG = '<svg><g><title>all (1,234 samples, 100%)</title><rect x="0" y="0" width="100%"/></g></svg>'


def test_the_sample_count_is_the_root_frames(tmp_path: Path) -> None:
    svg = tmp_path / "flame.svg"
    svg.write_text(SVG)
    assert flame_samples(svg) == 1234
    svg.write_text("<svg></svg>")
    assert flame_samples(svg) is None
    assert flame_samples(tmp_path / "missing.svg") is None


def test_the_report_sets_the_samples_against_the_cpu_used() -> None:
    flame = {"file": "flame.svg", "process": "order-2", "phase": "150/s", "seconds": 11, "cpuShareAtPick": 0.24}
    text = " ".join(flame_lines(flame | {"samples": 250, "cpuSecondsWhileSampled": 2.64}))
    assert "held the GIL" in text
    assert "250 samples (2.5 s at 100 Hz), against 2.64 s of CPU" in text
    assert "Read the graph's shares, not its seconds." in text
    assert "samples (" not in " ".join(flame_lines(flame))  # a report from before these were read
    failed = " ".join(flame_lines({"process": "order-2", "error": "Permission denied"}))
    assert "could not record order-2: Permission denied" in failed
