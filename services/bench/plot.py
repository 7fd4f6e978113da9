"""PNGs of the results: TTFT and throughput against concurrency and the coalescing sweep
(the benchmark), and memory and file descriptors over time (the soak)."""

from pathlib import Path
from typing import Any

from services.bench.report import window_label

STYLE = {"direct": ("tab:gray", "o"), "tokenbus": ("tab:blue", "s"), "compare": ("tab:red", "^")}


def plot(result: dict[str, Any], path: Path) -> None:
    """Three panels; needs matplotlib (a dev dependency), drawn with the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = result["scenarios"]
    fig, (ttft, rps, sweep) = plt.subplots(1, 3, figsize=(16, 4.8))
    for name, (color, marker) in STYLE.items():
        rows = [(s["concurrency"], s[name]) for s in scenarios if name in s]
        if not rows:
            continue
        cs = [c for c, _ in rows]
        ttft.plot(cs, [r["ttft_ms"]["p50"] for _, r in rows], marker=marker, color=color,
                  label=f"{name} p50")  # fmt: skip
        ttft.plot(cs, [r["ttft_ms"]["p99"] for _, r in rows], marker=marker, color=color,
                  linestyle="--", label=f"{name} p99")  # fmt: skip
        rps.plot(cs, [r["requests_per_s"] for _, r in rows], marker=marker, color=color,
                 label=name)  # fmt: skip
    for ax, title, unit in (
        (ttft, "Time to first token", "ms"),
        (rps, "Completed streamed requests", "requests/s"),
    ):
        ax.set_xscale("log")
        ax.set_xlabel("concurrent streams")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    ttft.set_yscale("log")
    _sweep(sweep, result["coalescing_sweep"])
    c = result.get("config", {})
    fig.suptitle(
        f"tokenbus vs direct llmsim: TTFT {c.get('ttft_ms', 0):g} ms, "
        f"{c.get('tokens_per_second', 0):g} tok/s, {c.get('max_tokens', 0)}-token answers, "
        f"{c.get('workers', '?')} workers, {c.get('cpus', '?')} CPUs"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _sweep(ax: Any, sweep: dict[str, Any]) -> None:
    points = sorted(
        (p for p in sweep["points"] if p["broker_messages_per_s"] is not None),
        key=lambda p: p["broker_messages_per_s"],
    )
    xs = [p["broker_messages_per_s"] for p in points]
    for key, style, label in (
        ("token_p50", "-o", "added token latency p50"),
        ("token_p99", "--o", "added token latency p99"),
        ("ttft_p99", ":s", "added TTFT p99"),
    ):
        ax.plot(xs, [p["added_ms"].get(key) for p in points], style, label=label)
    for p, x in zip(points, xs, strict=True):
        ax.annotate(f"{window_label(p)} ms", (x, p["added_ms"].get("token_p50") or 0),
                    textcoords="offset points", xytext=(4, 6), fontsize=8)  # fmt: skip
    ax.set_xlabel("broker messages/s (tokens topic)")
    ax.set_ylabel("ms over direct")
    ax.set_title(f"Coalescing window, {sweep['concurrency']} streams")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)


def plot_soak(result: dict[str, Any], path: Path) -> None:
    """RSS and open file descriptors of every process over the soak, one line each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rss, fds) = plt.subplots(1, 2, figsize=(14, 4.8))
    for name, series in sorted(result["samples"].items()):
        minutes = [sample[0] / 60 for sample in series]
        rss.plot(minutes, [sample[1] for sample in series], label=name)
        # Less the sockets clients hold open to it: those are the client's pool, not a leak.
        fds.plot(minutes, [sample[2] - sample[3] for sample in series], label=name)
    config = result["config"]
    fig.suptitle(
        f"soak: {result['requests']} requests at {config['rate']:g}/s, "
        f"{result['mismatches'] + result['resume_mismatches']} mismatches"
    )
    rss.set(xlabel="minutes", ylabel="RSS (MiB)", title="memory")
    fds.set(
        xlabel="minutes",
        ylabel="open file descriptors",
        title="file descriptors, less clients' connections to it",
    )
    rss.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
