"""lmserve's arithmetic and report: medians and paired ratios over rounds, the
targets, the markdown and the tokens/s-against-concurrency plot."""

from __future__ import annotations

from typing import Any

from scripts.bench.stats import fmt, fmt_stats, paired_ratios, stats

SERVERS = ("serve_haproxy", "serve_proxy", "fastapi", "bare", "bare_int8")
SERVE = ("serve_haproxy", "serve_proxy")
TARGET_C = 16
PLOT_FILE = "results-lmserve.png"  # beside results.md; the md links it


def _values(runs: dict[str, list[dict]], key: str, field: str) -> list[float]:
    return [x[field] for x in runs.get(key, [])]


def summarise(runs: dict[str, list[dict]], concurrency) -> dict[str, Any]:
    """Per server and concurrency: tokens/s, TTFT and generator CPU (median and
    range); ratios paired round by round."""
    summary = {}
    for key, rs in runs.items():
        summary[key] = {"tokens_per_s": stats(_values(runs, key, "tokens_per_s"))}
        if rs and "ttft_p50_ms" in rs[0]:
            summary[key] |= {
                "ttft_p50_ms": stats(_values(runs, key, "ttft_p50_ms")),
                "ttft_p99_ms": stats(_values(runs, key, "ttft_p99_ms")),
                "tpot_p50_ms": stats(_values(runs, key, "tpot_p50_ms")),
                "generator_cores": stats(_values(runs, key, "generator_cores")),
                "requests": sum(x["requests"] for x in rs),
            }

    def tps(name: str, c: int) -> list[float]:
        return _values(runs, f"{name}/c{c}", "tokens_per_s")

    ratios = {}
    for name in SERVERS:
        if tps(name, 1) and tps(name, TARGET_C):
            ratios[f"{name} c{TARGET_C}/c1"] = paired_ratios(
                tps(name, TARGET_C), tps(name, 1)
            )
    for c in concurrency:
        for name in SERVE:
            for base in ("bare", "fastapi"):
                if tps(name, c) and tps(base, c):
                    ratios[f"{name}/{base} c{c}"] = paired_ratios(
                        tps(name, c), tps(base, c)
                    )
        if tps("serve_proxy", c) and tps("serve_haproxy", c):
            ratios[f"serve_proxy/serve_haproxy c{c}"] = paired_ratios(
                tps("serve_proxy", c), tps("serve_haproxy", c)
            )
        if tps("bare_int8", c):
            ratios[f"bare_int8/bare c{c}"] = paired_ratios(
                tps("bare_int8", c), tps("bare", c)
            )
    return {"summary": summary, "ratios": ratios}


def perplexity_delta(section: dict[str, Any]) -> float | None:
    ppl = section.get("perplexity")
    if not ppl:
        return None
    return ppl["int8"] / ppl["fp32"] - 1


def lmserve_targets(section: dict[str, Any], add) -> None:
    """The issue's serving targets (c=16), through report.targets' `add`."""
    ratios = section.get("ratios") or {}
    for name, ingress in (("serve_haproxy", "haproxy"), ("serve_proxy", "proxy")):
        add(
            f"LM app ({ingress}) tokens/s, c=16 / c=1 (batching)",
            ">= 4",
            ratios.get(f"{name} c16/c1"),
            lambda v: v >= 4,
        )
        add(
            f"LM app ({ingress}) / bare batched loop tokens/s, c=16",
            ">= 0.7",
            ratios.get(f"{name}/bare c16"),
            lambda v: v >= 0.7,
        )
        add(
            f"LM app ({ingress}) / FastAPI one-at-a-time tokens/s, c=16",
            ">= 3",
            ratios.get(f"{name}/fastapi c16"),
            lambda v: v >= 3,
        )


def lmserve_markdown(section: dict[str, Any] | None) -> list[str]:
    if not section:
        return []
    if "skipped" in section:
        return ["", "## Serving a language model", "", f"skipped: {section['skipped']}"]
    w, m = section["work"], section["model"]
    cfg, train = m["config"], m["train"]
    ppl = section["perplexity"]
    lines = [
        "",
        "## Serving a language model (lmserve)",
        "",
        f"- model: preset {m['preset']} (n_layer={cfg['n_layer']}, "
        f"d_model={cfg['d_model']}, context={cfg['context']}), trained "
        f"{train['steps']} steps ({train['seconds']} s, {train['batch']}) on the "
        "standard library's source; exported as training does",
        f"- request: a {w['prompt_tokens']}-token held-out prompt, "
        f"{w['max_tokens']} output tokens (greedy, ignore_eos), streamed (SSE, "
        "include_usage); closed loop for "
        f"{w['seconds']} s per point, then the answers in flight finish; "
        f"{w['rounds']} round(s), median (min-max)",
        f"- load generator: {section['generator']}",
        f"- setup: {section['setup']}",
        *_load_note(section.get("loadavg")),
        "",
        f"![tokens/s against concurrency]({PLOT_FILE})",
        "",
        "| server | c | output tokens/s | TTFT p50 ms | TTFT p99 ms | "
        "TPOT p50 ms | generator cores |",
        "|---|---|---|---|---|---|---|",
    ]
    summary = section["summary"]
    for name in SERVERS:
        for c in w["concurrency"]:
            s = summary.get(f"{name}/c{c}")
            if not s:
                continue
            lines.append(
                f"| {name} | {c} | {fmt_stats(s['tokens_per_s'])} | "
                f"{fmt_stats(s.get('ttft_p50_ms'))} | "
                f"{fmt_stats(s.get('ttft_p99_ms'))} | "
                f"{fmt_stats(s.get('tpot_p50_ms'), 2)} | "
                f"{fmt_stats(s.get('generator_cores'), 2)} |"
            )
    lines += ["", "| ratio (tokens/s, paired by round) | median (range) |", "|---|---|"]
    for k, s in section["ratios"].items():
        lines.append(f"| {k} | {fmt_stats(s, 2)} |")
    delta = perplexity_delta(section)
    lines += [
        "",
        f"- int8 (torchao dynamic-activation/int8-weight, lm_serve_app variant=int8): "
        f"held-out perplexity {fmt(ppl['int8'], 3)} against fp32's "
        f"{fmt(ppl['fp32'], 3)} ({100 * delta:+.2f} %), over "
        f"{m['eval']['blocks']} blocks of {m['eval']['tokens_per_block']} tokens",
    ]
    return lines


def _load_note(load: dict | None) -> list[str]:
    if not load:
        return []
    busy = max(load["start"][0], load["end"][0]) > 2
    return [
        f"- load average (1, 5, 15 min) at the section's start {load['start']}, "
        f"end {load['end']}"
        + ("; a shared machine, busy beyond its 2 cores" if busy else "")
    ]


def plot(section: dict[str, Any], path) -> None:
    """tokens/s (median, range as error bars) against concurrency per server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in SERVERS:
        points = [
            (c, section["summary"][f"{name}/c{c}"]["tokens_per_s"])
            for c in section["work"]["concurrency"]
            if f"{name}/c{c}" in section["summary"]
        ]
        if not points:
            continue
        cs = [c for c, _ in points]
        med = [s["median"] for _, s in points]
        err = [
            [s["median"] - s["min"] for _, s in points],
            [s["max"] - s["median"] for _, s in points],
        ]
        ax.errorbar(cs, med, yerr=err, marker="o", capsize=3, label=name)
    ax.set_xscale("log", base=2)
    ax.set_xticks(section["work"]["concurrency"])
    ax.set_xticklabels([str(c) for c in section["work"]["concurrency"]])
    ax.set_xlabel("concurrent streams")
    ax.set_ylabel("output tokens/s")
    ax.set_title(f"LM serving, preset {section['model']['preset']}, 2 shared cores")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
